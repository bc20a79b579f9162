"""Push jobs to a Faktory-compatible server with the cdrx `faktory` client (1.0.0).

Usage: producer.py URL QUEUE COUNT

The client sends json.dumps output (", " and ": " separators) and a HELLO without "v", hashing
the password once. Prints one JSON line: {"jids": [...], "ok": [...]}. Exits 3 on an
authentication error, 1 if any push was refused.
"""
import json
import logging
import sys

import faktory
from faktory.exceptions import FaktoryAuthenticationError


def main() -> int:
    url, queue, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    jids, oks = [], []
    try:
        with faktory.connection(url) as client:
            for i in range(count):
                jid = "py-{}-{}".format(i, client.random_job_id())
                ok = client.queue(
                    "py_add",
                    args=[i, "x y  z", 12345678901234567890, {"k": "v w"}],
                    queue=queue,
                    jid=jid,
                    custom={"origin": "python", "n": i},
                )
                jids.append(jid)
                oks.append(ok)
    except FaktoryAuthenticationError as e:
        print(json.dumps({"error": "auth", "detail": str(e)}))
        return 3
    print(json.dumps({"jids": jids, "ok": oks}))
    return 0 if all(oks) else 1


if __name__ == "__main__":
    sys.exit(main())
