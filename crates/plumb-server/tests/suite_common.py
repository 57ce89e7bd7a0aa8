"""What the client suites share: the servers' addresses, plain HTTP requests, the runner.

tests/clients.rs starts two servers sharing one engine and passes: PLUMB_URL (open),
PLUMB_KEYED_URL (wants PLUMB_API_KEY), PLUMB_MODEL, PLUMB_MAX_BODY, PLUMB_CTX, PLUMB_MAX_BATCH.
"""

import json
import os
import sys
import time
import traceback
import urllib.error
import urllib.request

URL = os.environ["PLUMB_URL"]
KEYED_URL = os.environ["PLUMB_KEYED_URL"]
KEY = os.environ["PLUMB_API_KEY"]
MODEL = os.environ["PLUMB_MODEL"]
MAX_BODY = int(os.environ["PLUMB_MAX_BODY"])
CTX = int(os.environ["PLUMB_CTX"])
MAX_BATCH = int(os.environ["PLUMB_MAX_BATCH"])


def raw(path, body=None, headers=None, base=URL, method=None):
    """(status, parsed JSON or text) of a plain HTTP request."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers=headers or {}, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def sse(path, body, base=URL):
    """The server-sent events of a streamed request, as (event name or None, parsed data)."""
    status, text = raw(path, body, base=base)
    assert status == 200 and isinstance(text, str), (status, text)
    events = []
    for block in text.split("\n\n"):
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[len("event:"):].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:"):].strip())
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


def main(tests, label):
    """Runs every `test_*` of `tests` (a module's globals); prints one line per check and
    'N passed, N failed'; exits 1 on a failure."""
    tests = [(k, v) for k, v in tests.items() if k.startswith("test_") and callable(v)]
    passed = failed = 0
    t_all = time.time()
    for name, fn in tests:
        t0 = time.time()
        try:
            fn()
            passed += 1
            print(f"PASS {name} ({time.time() - t0:.1f} s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {name} ({time.time() - t0:.1f} s)", flush=True)
            traceback.print_exc()
    print(f"{label}, {time.time() - t_all:.1f} s", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)
