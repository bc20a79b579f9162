#!/usr/bin/env python3
"""Fills a running werk with N retry jobs (PUSHB, then pipelined FETCH + FAIL), for measuring
the web UI's list pages on a large set (bench/web.sh). Usage: web_fill.py HOST:PORT N"""
import json
import socket
import sys


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    n = int(sys.argv[2])
    s = socket.create_connection((host, int(port)))
    f = s.makefile("rb")

    def reply():
        line = f.readline()
        if line.startswith(b"$"):
            size = int(line[1:])
            return None if size < 0 else f.read(size + 2)[:-2]
        if line.startswith(b"-"):
            raise SystemExit("server error: " + line.decode().strip())
        return line.strip()

    reply()
    s.sendall(b'HELLO {"v":2,"wid":"web-fill","hostname":"bench","pid":1}\r\n')
    reply()
    chunk = 1000
    types = ["ImageResize", "SendEmail", "ChargeCard", "SyncInventory", "BuildReport"]
    for start in range(0, n, chunk):
        # A worker process that stops beating is dropped (--heartbeat-timeout-secs).
        s.sendall(b'BEAT {"wid":"web-fill"}\r\n')
        reply()
        jobs = [
            {
                "jid": "fill-%09d" % i,
                "jobtype": types[i % len(types)],
                "queue": "fill",
                "args": [i, "user-%d@example.com" % (i % 5000)],
                "retry": 25,
            }
            for i in range(start, min(n, start + chunk))
        ]
        s.sendall(b"PUSHB " + json.dumps(jobs).encode() + b"\r\n")
        reply()
        s.sendall(b"FETCH fill\r\n" * len(jobs))
        got = [json.loads(reply())["jid"] for _ in jobs]
        out = []
        for jid in got:
            i = int(jid.split("-")[1])
            fail = {
                "jid": jid,
                "errtype": "Net::ReadTimeout" if i % 7 else "PaymentDeclined",
                "message": "upstream timed out after 30s (attempt %d)" % (i % 13),
                "backtrace": ["app/jobs/worker.rb:%d:in `perform'" % (i % 300)],
            }
            out.append(b"FAIL " + json.dumps(fail).encode() + b"\r\n")
        s.sendall(b"".join(out))
        for _ in out:
            reply()
        if start % 100000 == 0:
            print("filled", start + len(jobs), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
