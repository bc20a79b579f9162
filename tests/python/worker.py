"""Run a cdrx `faktory` Worker (1.0.0) for a bounded time.

Usage: worker.py URL QUEUE EXPECTED TIMEOUT_SECONDS

Handlers: "py_add" records its args and succeeds; "py_boom" records its args and raises
ValueError("boom from python"). Worker.run() never returns (it ends with sys.exit), so the
worker's own event loop, Worker.tick(), is driven here until EXPECTED jobs have finished and
their ACK/FAIL has been sent, or the timeout passes. Heartbeats are sent every second (BEAT
JSON with spaces). Prints one JSON line with what ran and the reply to a final BEAT.
Exits 3 on an authentication error, 2 on timeout.
"""
import json
import logging
import sys
import threading
import time
from datetime import datetime

from faktory import Worker
from faktory.exceptions import FaktoryAuthenticationError

lock = threading.Lock()
processed = []
failed = []


def py_add(*args):
    with lock:
        processed.append(list(args))
    return args[0] + 1 if args and isinstance(args[0], int) else None


def py_boom(*args):
    with lock:
        failed.append(list(args))
    raise ValueError("boom from python")


def main() -> int:
    url, queue, expected, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    w = Worker(faktory=url, queues=[queue], concurrency=1, use_threads=True, timeout=10)
    w.register("py_add", py_add)
    w.register("py_boom", py_boom)
    try:
        w.faktory.connect(worker_id=w.worker_id)
    except FaktoryAuthenticationError as e:
        print(json.dumps({"error": "auth", "detail": str(e)}))
        return 3
    w.send_heartbeat_every = 1
    w._last_heartbeat = datetime.now()

    deadline = time.monotonic() + limit
    finished = False
    while time.monotonic() < deadline:
        w.tick()
        with lock:
            n = len(processed) + len(failed)
        if n >= expected and not w._pending:
            finished = True
            break

    w.faktory.reply("BEAT", {"wid": w.worker_id})
    beat = next(w.faktory.get_message())
    w.faktory.reply("END")
    w.faktory.disconnect()
    w.executor.shutdown(wait=True)
    with lock:
        out = {"processed": processed, "failed": failed, "beat": beat, "finished": finished,
               "wid": w.worker_id}
    print(json.dumps(out))
    return 0 if finished else 2


if __name__ == "__main__":
    sys.exit(main())
