// Werk web UI: live dashboard graph (polls /stats), check-all boxes, confirmations.
(function () {
  "use strict";
  const prefix = document.body.dataset.prefix || "";

  document.querySelectorAll("input.check-all").forEach(function (box) {
    box.addEventListener("change", function () {
      box.closest("table").querySelectorAll('tbody input[type="checkbox"]').forEach(function (b) {
        b.checked = box.checked;
      });
    });
  });

  document.querySelectorAll("button[data-confirm]").forEach(function (btn) {
    btn.addEventListener("click", function (ev) {
      if (!window.confirm(btn.dataset.confirm)) ev.preventDefault();
    });
  });

  const graph = document.getElementById("live-graph");
  if (!graph) return;
  const select = document.getElementById("poll-interval");
  const status = document.getElementById("live-status");
  const samples = []; // {processed, failed} deltas
  let last = null;
  let timer = null;
  const W = 900, H = 220, PAD = 20, MAX = 60;

  function setStat(name, value) {
    const el = document.querySelector('[data-stat="' + name + '"]');
    if (el) el.textContent = value;
  }

  function draw() {
    const max = Math.max(1, ...samples.map(function (s) { return Math.max(s.p, s.f); }));
    const step = (W - 2 * PAD) / (MAX - 1);
    function pts(key) {
      return samples.map(function (s, i) {
        const x = PAD + step * (MAX - samples.length + i);
        const y = H - PAD - (H - 2 * PAD) * s[key] / max;
        return x.toFixed(1) + "," + y.toFixed(1);
      }).join(" ");
    }
    graph.querySelector("polyline.processed").setAttribute("points", pts("p"));
    graph.querySelector("polyline.failed").setAttribute("points", pts("f"));
    graph.dataset.samples = String(samples.length);
  }

  function poll() {
    fetch(location.origin + prefix + "/stats", { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (info) {
        const f = info.faktory;
        const cur = { p: f.total_processed, f: f.total_failures };
        setStat("processed", f.total_processed);
        setStat("failed", f.total_failures);
        setStat("enqueued", f.total_enqueued);
        setStat("busy", f.sets.working);
        setStat("retries", f.sets.retries);
        setStat("scheduled", f.sets.scheduled);
        setStat("dead", f.sets.dead);
        if (last) {
          samples.push({ p: Math.max(0, cur.p - last.p), f: Math.max(0, cur.f - last.f) });
          if (samples.length > MAX) samples.shift();
          draw();
          const s = samples[samples.length - 1];
          status.textContent = "last " + select.value + " s: " + s.p + " processed, " + s.f + " failed";
        }
        last = cur;
      })
      .catch(function (e) { status.textContent = "poll failed: " + e; });
  }

  function start() {
    if (timer) clearInterval(timer);
    timer = setInterval(poll, Number(select.value) * 1000);
  }
  select.addEventListener("change", start);
  poll();
  start();
})();
