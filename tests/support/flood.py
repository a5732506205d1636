"""Loopback request flood for fault tests, run as its own process: ``python -m tests.flood``.

Reads JSON ``{"port", "path", "tokens", "connections", "seconds"}`` on stdin, keeps
``connections`` clients sending the tokens round-robin (a fresh connection per request) for
``seconds``, and prints the status counts as JSON. A separate process keeps the attackers' client
work off the interpreter that measures the legitimate traffic.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tests.support.procs import http_get


def flood(port: int, path: str, tokens: Sequence[str], connections: int, seconds: float) -> Counter[str]:
    """Run the flood against 127.0.0.1:port; return how often each status (or error) came back."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(offset: int) -> None:
        i = offset
        while time.monotonic() < deadline:
            try:
                outcome = str(http_get(port, path, token=tokens[i % len(tokens)], timeout=15).status)
            except OSError as exc:
                outcome = type(exc).__name__
            with lock:
                counts[outcome] += 1
            i += connections

    threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts


def main() -> None:
    """Flood as told on stdin; print the status counts."""
    job: dict[str, Any] = json.load(sys.stdin)
    counts = flood(job["port"], job["path"], job["tokens"], job["connections"], job["seconds"])
    print(json.dumps(dict(counts)), flush=True)


if __name__ == "__main__":
    main()
