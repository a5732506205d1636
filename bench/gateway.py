"""Gateway mode over HTTP: what nginx ``auth_request`` to the service adds in front of an upstream.

Usage (repo root): .venv/bin/python -m bench.gateway [--duration 10] [--connections 16] [--runs 3]
                   [--workers 2] [--quick]

One nginx (Debian's, the shipped template deploy/gateway/nginx/default.conf.template) serves two
ports in front of the same upstream, a static nginx location (so the upstream costs next to nothing
and the difference is the decision): ``direct`` proxies straight to it, ``gated`` asks the service's
``/auth/check`` first (real gunicorn with GATEWAY_POLICY, the local issuer's keys, one cached
token). wrk drives each in turn, alternating, for ``--runs`` rounds; reported are the medians of
req/s and of wrk's p50/p99 latency, and what the decision adds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "gateway" / "nginx" / "default.conf.template"
POLICY = "rules:\n  - name: messages\n    path: /api/messages\n    scopes: read:messages\n"
_LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, token: str, duration: float, connections: int) -> dict[str, float]:
    """One wrk run: req/s and p50/p99 in ms; fails on any non-2xx answer."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"bench.gateway: non-2xx answers from {url}:\n{out}")
    rate = _RATE.search(out)
    latency = {p: float(v) * _UNITS[u] for p, v, u in _LATENCY.findall(out)}
    if rate is None or set(latency) != {"50", "99"}:
        raise SystemExit(f"bench.gateway: cannot read wrk's output:\n{out}")
    return {"rps": float(rate.group(1)), "p50_ms": latency["50"], "p99_ms": latency["99"]}


def nginx_config(direct: int, gated: int, upstream: int, service: int) -> str:
    """The shipped template for the gated port, a plain proxy for the direct one, a static upstream."""
    from tests.support.nginx import render_template

    gated_server = render_template(
        TEMPLATE.read_text(),
        {
            "GATEWAY_PORT": f"127.0.0.1:{gated}",
            "AUTH_SERVICE": f"http://127.0.0.1:{service}",
            "UPSTREAM": f"http://127.0.0.1:{upstream}",
        },
    )
    return f"""
{gated_server}
server {{
    listen 127.0.0.1:{direct};
    location / {{ proxy_pass http://127.0.0.1:{upstream}; }}
}}
server {{
    listen 127.0.0.1:{upstream};
    access_log off;
    location / {{ default_type application/json; return 200 '{{"ok":true}}'; }}
}}
"""


def main(argv: list[str] | None = None) -> int:
    """Start the issuer, the service, nginx; measure direct and gated; print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument("--runs", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--quick", action="store_true", help="CI smoke: 2 s runs, 1 round")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.runs = 2, 1
    if shutil.which("wrk") is None:
        raise SystemExit("bench.gateway: wrk not found (apt-get install wrk; bench/run installs it)")

    from bench.wsgi import _start_issuer
    from tests.support.nginx import Nginx
    from tests.support.procs import free_port
    from tests.support.procs import launch

    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    issuer, stop_issuer = _start_issuer(free_port(), 10)
    token = issuer.material.hot_token()
    (work / "policy.yaml").write_text(POLICY)
    (work / "prom").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH0_", "GATEWAY_"))}
    env.update(
        {
            "AUTH0_ISSUER": issuer.url,
            "AUTH0_AUDIENCE": issuer.audience,
            "AUTH0_JWKS_URI": issuer.jwks_uri,
            "GATEWAY_POLICY": str(work / "policy.yaml"),
            "PROMETHEUS_MULTIPROC_DIR": str(work / "prom"),
            "LOG_FORMAT": "json",
        }
    )
    service = launch(env, log_dir=work / "logs", workers=args.workers)
    nginx = Nginx(work / "nginx")
    direct, upstream = nginx.extra_port(), nginx.extra_port()
    results: dict[str, list[dict[str, float]]] = {"direct": [], "gated": []}
    try:
        service.wait_ready("/readyz", timeout=60)
        nginx.start(nginx_config(direct, nginx.port, upstream, service.port))
        urls = {
            "direct": f"http://127.0.0.1:{direct}/api/messages",
            "gated": f"http://127.0.0.1:{nginx.port}/api/messages",
        }
        for name, url in urls.items():  # warm up: keys fetched, token cached in every worker
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
            for _ in range(20):
                with urllib.request.urlopen(request, timeout=5) as response:
                    assert response.status == 200, (name, response.status)
            wrk(url, token, 1, args.connections)
        for run in range(args.runs):
            for name in ("direct", "gated") if run % 2 == 0 else ("gated", "direct"):
                results[name].append(wrk(urls[name], token, args.duration, args.connections))
                time.sleep(0.5)
    finally:
        nginx.stop()
        service.stop()
        stop_issuer()
    summary = {
        name: {key: statistics.median(r[key] for r in runs) for key in ("rps", "p50_ms", "p99_ms")}
        for name, runs in results.items()
    }
    added = {key: summary["gated"][key] - summary["direct"][key] for key in ("p50_ms", "p99_ms")}
    print(
        f"Gateway mode over HTTP: wrk -t1 -c{args.connections} -d{args.duration:g}s, median of "
        f"{args.runs} alternating runs, {args.workers} gunicorn workers, nginx "
        f"{subprocess.run(['nginx', '-v'], capture_output=True, text=True).stderr.strip().split('/')[-1]}.\n"
    )
    print("| path | req/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for name, label in (
        ("direct", "nginx → upstream"),
        ("gated", "nginx + auth_request → service → upstream"),
    ):
        row = summary[name]
        print(f"| {label} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} |")
    print(
        f"\nThe decision adds {added['p50_ms']:.2f} ms at p50 and {added['p99_ms']:.2f} ms at p99; gated "
        f"throughput is {summary['gated']['rps'] / summary['direct']['rps']:.0%} of direct."
    )
    if args.json:
        args.json.write_text(
            json.dumps({"runs": results, "median": summary, "added": added}, indent=2) + "\n"
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
