#!/usr/bin/env bash
# CI stage "hostile": 100 slowloris + 100 idle connections and huge request heads against the
# real `gunicorn -c gunicorn.conf.py` (default 2 workers x 4 threads) while probes run; asserts
# p99 < 100 ms with zero errors, 408 at the 10 s header deadline, and < 1 s of worker CPU for
# 8 maximal + 8 attack-sized heads. Loopback only, about 25 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
timeout 60 .venv/bin/python .ci/lib/hostile_check.py
