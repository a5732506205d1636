"""CI stage "hostile": slowloris, idle sockets and huge heads against real gunicorn while probes run.

Asserts what the service promises with its default configuration (2 workers x 4 threads):
probes answer within 100 ms at p99 with zero errors, every slow connection is closed at the
10 s header deadline, and 8 maximal plus 8 attack-sized heads cost under 1 s of worker CPU.
Loopback only; bounded in sockets (216) and time (about 25 s).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import hostile  # noqa: E402
from tests.support.helpers import warm  # noqa: E402
from tests.support.issuer import LocalIssuer  # noqa: E402
from tests.support.procs import ServerFactory  # noqa: E402

HEADER_TIMEOUT = 10.0


def main() -> int:
    """Run the scenario; return the process exit code."""
    failures: list[str] = []
    with LocalIssuer() as issuer, tempfile.TemporaryDirectory(prefix="ci-hostile-") as tmp:
        factory = ServerFactory(Path(tmp))
        try:
            server = factory(issuer, workers=None, env={"GUNICORN_GRACEFUL_TIMEOUT": None})
            server.wait_booted(2, timeout=60)
            warm(server, issuer, 2, timeout=60)
            token = issuer.mint()
            with hostile.swarm(server.port, slow=100, idle=100) as crowd:
                heads: list[object] = []
                attacker = threading.Thread(target=lambda: heads.append(hostile.huge_heads(server, 8)))
                time.sleep(0.5)
                attacker.start()
                probes = hostile.probe(server, token, count=400, until=time.monotonic() + 6)
                attacker.join(timeout=30)
                print(f"probes: {len(probes.latencies)}, p99 {probes.p99() * 1000:.1f} ms, "
                      f"failures {len(probes.failures)}")
                if probes.failures:
                    failures.append(f"probe failures: {probes.failures[:5]}")
                if probes.p99() >= 0.100:
                    failures.append(f"p99 {probes.p99():.3f} s >= 0.100 s")
                crowd.wait_closed(timeout=HEADER_TIMEOUT + 8)
                slow = crowd.lifetimes(crowd.slow)
                print(f"slow connections closed after {min(filter(None, slow), default=0):.1f}"
                      f"-{max(filter(None, slow), default=0):.1f} s; still open: {slow.count(None)}")
                if None in slow or not all(HEADER_TIMEOUT - 0.5 <= t <= HEADER_TIMEOUT + 4 for t in slow):
                    failures.append(f"slow connections not closed at the deadline: {slow}")
                if not all(crowd.received.get(s, b"").startswith(b"HTTP/1.1 408 ") for s in crowd.slow):
                    failures.append("a slow connection got no 408")
            spent, _ = hostile.worker_cpu(server, lambda: hostile.huge_heads(server, 8))
            print(f"worker CPU for 8 maximal + 8 attack heads: {spent:.2f} s")
            if spent >= 1.0:
                failures.append(f"huge heads cost {spent:.2f} s of worker CPU")
            if not server.alive():
                failures.append("gunicorn died")
        finally:
            factory.close()
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
