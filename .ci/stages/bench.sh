#!/usr/bin/env bash
# Benchmark smoke: bench/run --quick (1 run, 1 s per scenario and target) so the benchmark cannot
# rot. No thresholds: CI timings on a shared 2-core box are not a verdict. It fails only if a
# target does not start, wrk finds no summary, or the run crashes. Installs wrk and node deps.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The in-process WSGI benchmark first (seconds): ours vs the quickstart without HTTP noise.
.venv/bin/python -m bench.wsgi --quick --issuer-port "${BENCH_WSGI_ISSUER_PORT:-3018}"
bench/run --quick --issuer-port "${BENCH_ISSUER_PORT:-3019}"
# Every scenario must have answered with the expected statuses (a functional check, not timing).
.venv/bin/python - <<'PY'
import json
import sys

report = json.load(open("bench/results/latest.json"))
bad = [
    f"{target}/{scenario}"
    for target, scenarios in report["results"]["medians"].items()
    for scenario, entry in scenarios.items()
    if not entry["statuses_ok"]
]
if bad:
    sys.exit("bench smoke: unexpected statuses in " + ", ".join(bad))
print(f"bench smoke: {sum(len(s) for s in report['results']['medians'].values())} target/scenario pairs ok")
PY
