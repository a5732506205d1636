#!/usr/bin/env bash
# CI stage "prometheus": Debian's Prometheus (package `prometheus`: prometheus + promtool) against
# the service started locally from .venv with gunicorn, next to the dev issuer:
#   promtool check config  the repo's scrape config (deploy/prometheus/prometheus.yml) and its
#                          loopback variant
#   promtool check rules   the alert rules (deploy/prometheus/alerts.yml) and the dashboard's
#                          queries (as recording rules); promtool test rules: alerts.test.yml
#   promtool check metrics a real /metrics scrape after bin/smoke produced decisions
#   prometheus             a real server on a loopback port scrapes the service; its API must show
#                          the target up and auth_decisions_total equal to bin/smoke's counts
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=.ci/lib/common.sh
. .ci/lib/common.sh

WORK="$(mktemp -d /tmp/ci-prometheus.XXXXXX)"
AUDIENCE=https://api.dev.local
ISSUER_PORT="$(free_port)"
API_PORT="$(free_port)"
PROM_PORT="$(free_port)"
ISSUER_PID=""; API_PID=""; PROM_PID=""

stop_pid() { # PID: SIGTERM, wait up to 25 s, report the exit status
  local pid="$1" rc=0
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 250); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { kill -KILL "$pid" 2>/dev/null || true; echo "pid $pid needed SIGKILL"; }
  wait "$pid" 2>/dev/null || rc=$?
  return "$rc"
}

cleanup() {
  local rc=$?
  step_failed
  if [ "$rc" != 0 ]; then
    for f in api issuer prometheus; do
      [ -s "$WORK/$f.log" ] && { echo "----- $f log (last 25 lines) -----" >&2; tail -n 25 "$WORK/$f.log" >&2; }
    done
  fi
  stop_pid "$PROM_PID" || true
  stop_pid "$API_PID" || true
  stop_pid "$ISSUER_PID" || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_prometheus() {
  apt_ensure curl ca-certificates
  if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
    echo "already installed: $(prometheus --version 2>&1 | head -n 1)"
    return 0
  fi
  # The package's init script must not start a system-wide Prometheus on :9090 here.
  local own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  apt_ensure prometheus
  [ "$own_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
  prometheus --version 2>&1 | head -n 1
}
step "Debian's prometheus + promtool" install_prometheus

# A loopback variant of the repo's scrape config: same jobs and intervals, targets rewritten.
make_local_config() {
  .venv/bin/python - "$API_PORT" "$PROM_PORT" > "$WORK/prometheus.yml" <<'EOF'
import os
import sys

import yaml

api_port, prom_port = sys.argv[1:3]
with open("deploy/prometheus/prometheus.yml") as fh:
    config = yaml.safe_load(fh)
targets = {"api": f"127.0.0.1:{api_port}", "prometheus": f"127.0.0.1:{prom_port}"}
jobs = {job["job_name"] for job in config["scrape_configs"]}
assert jobs == set(targets), f"scrape jobs changed: {sorted(jobs)}"
for job in config["scrape_configs"]:
    job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
# Rule files are relative to the config file, which moves to the work directory.
config["rule_files"] = [f"{os.getcwd()}/deploy/prometheus/{name}" for name in config["rule_files"]]
print(yaml.safe_dump(config, sort_keys=False))
EOF
}
step "promtool check config deploy/prometheus/prometheus.yml" \
  promtool check config deploy/prometheus/prometheus.yml
venv_module yaml
step "write loopback scrape config" make_local_config
step "promtool check config (loopback variant)" promtool check config "$WORK/prometheus.yml"
step "promtool check rules deploy/prometheus/alerts.yml" promtool check rules deploy/prometheus/alerts.yml
step "promtool test rules deploy/prometheus/alerts.test.yml" \
  promtool test rules deploy/prometheus/alerts.test.yml
venv_tool pytest
# The same promtool checks, plus the dashboard's queries and the PrometheusRule wrapper, as the
# unit tests run them; here promtool is installed, so none may skip.
step "pytest tests/repo/test_monitoring.py (promtool present: no skips)" \
  env REQUIRE_PROMTOOL=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/repo/test_monitoring.py

start_service() {
  # DEVELOPMENT issuer on loopback; its identifier is its loopback URL here.
  DEV_ISSUER_PORT="$ISSUER_PORT" DEV_ISSUER_AUDIENCE="$AUDIENCE" \
    .venv/bin/python -m dev_issuer > "$WORK/issuer.log" 2>&1 &
  ISSUER_PID=$!
  wait_http "http://127.0.0.1:$ISSUER_PORT/healthz" 20 || { echo "dev issuer did not start"; return 1; }
  # The service as shipped (gunicorn.conf.py), bound to loopback only.
  AUTH0_ISSUER="http://127.0.0.1:$ISSUER_PORT/" AUTH0_AUDIENCE="$AUDIENCE" \
    PROMETHEUS_MULTIPROC_DIR="$WORK/multiproc" GUNICORN_CMD_ARGS="--bind 127.0.0.1:$API_PORT" \
    .venv/bin/gunicorn -c gunicorn.conf.py > "$WORK/api.log" 2>&1 &
  API_PID=$!
  wait_http "http://127.0.0.1:$API_PORT/readyz" 30 || { echo "service not ready"; return 1; }
  echo "dev issuer pid $ISSUER_PID on :$ISSUER_PORT, gunicorn pid $API_PID on :$API_PORT"
}
step "start dev issuer + service (gunicorn from .venv)" start_service

run_smoke() {
  bin/smoke -q --token-url "http://127.0.0.1:$ISSUER_PORT/oauth/token" --audience "$AUDIENCE" \
    "http://127.0.0.1:$API_PORT" | tee "$WORK/smoke.out"
}
step "bin/smoke (produces the decisions to count)" run_smoke

check_metrics() {
  local name
  curl -fsS --max-time 5 "http://127.0.0.1:$API_PORT/metrics" > "$WORK/metrics.txt"
  promtool check metrics < "$WORK/metrics.txt"
  for name in auth_decisions_total auth_decision_duration_seconds_bucket jwks_fetches_total \
              http_requests_total http_request_duration_seconds_bucket jwks_keys \
              jwks_fetch_duration_seconds_bucket jwks_last_success_timestamp_seconds \
              token_cache_requests_total service_build_info; do
    grep -q "^$name{" "$WORK/metrics.txt" || { echo "no $name series in the scrape"; return 1; }
  done
  echo "$(grep -c -v '^#' "$WORK/metrics.txt") samples, lint clean"
}
step "promtool check metrics on a real scrape" check_metrics

start_prometheus() {
  prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT" > "$WORK/prometheus.log" 2>&1 &
  PROM_PID=$!
  wait_http "http://127.0.0.1:$PROM_PORT/-/ready" 30 || { echo "prometheus not ready"; return 1; }
  echo "prometheus pid $PROM_PID on 127.0.0.1:$PROM_PORT"
}
step "start Debian's prometheus on loopback" start_prometheus

promql() { curl -fsS --max-time 5 "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1"; }

scraped() {
  local deadline=$(( $(date +%s) + 40 ))
  # (into a variable first: `grep -q` in a pipe could SIGPIPE curl and trip pipefail)
  until up="$(promql 'up{job="api"}')" && [[ "$up" =~ \"value\":\[[0-9.]+,\"1\"\] ]]; do
    [ "$(date +%s)" -lt "$deadline" ] || { curl -fsS "http://127.0.0.1:$PROM_PORT/api/v1/targets"; return 1; }
    sleep 1
  done
  echo "target api up"
  wait_for_smoke_counts "$WORK/smoke.out" "$WORK" $(( deadline - $(date +%s) ))
}
step "Prometheus API: target up, auth_decisions_total == bin/smoke's counts" scraped

rules_loaded() {
  local want got
  want="$(grep -c '^ *- alert:' deploy/prometheus/alerts.yml)"
  curl -fsS --max-time 5 "http://127.0.0.1:$PROM_PORT/api/v1/rules?type=alert" > "$WORK/rules.json"
  got="$(python3 -c 'import json, sys; groups = json.load(open(sys.argv[1]))["data"]["groups"]
print(sum(len(g["rules"]) for g in groups))' "$WORK/rules.json")"
  [ "$got" = "$want" ] || { echo "Prometheus loaded $got alert rules, alerts.yml has $want"; return 1; }
  echo "$got alert rules loaded"
}
step "Prometheus API: every alert rule loaded" rules_loaded

stop_all() {
  local rc=0
  stop_pid "$PROM_PID" || { rc=$?; echo "prometheus exit $rc"; }
  PROM_PID=""
  rc=0; stop_pid "$API_PID" || rc=$?
  API_PID=""
  echo "gunicorn: SIGTERM -> exit $rc"
  [ "$rc" = 0 ] || return 1
  stop_pid "$ISSUER_PID" || true
  ISSUER_PID=""
}
step "stop (gunicorn must exit 0 on SIGTERM)" stop_all

log "prometheus stage passed in $(( $(date +%s) - STAGE_T0 ))s"
