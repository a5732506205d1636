#!/usr/bin/env bash
# CI stage "compose": the unmodified docker-compose.yml with the README's own command,
# `docker compose up -d --build --wait` (Docker Compose v2 from the shared tooling), with zero
# configuration; bin/smoke against the published 127.0.0.1 ports; then the prometheus service: its
# `api` target is up and auth_decisions_total{job="api"} equals, per route and outcome, exactly the
# decisions bin/smoke produced; then the README's DPoP walk-through (200, then 401 on replay)
# recorded in the redis service, which /readyz names; then bin/smoke --gateway and the README's
# gateway lines through the nginx gateway on its published port; then `docker compose down -v`.
# COMPOSE_TOOL=podman-compose runs the same checks with podman-compose.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=.ci/lib/common.sh
. .ci/lib/common.sh

PROJECT="flask-auth0-api-ci"
WORK="$(mktemp -d /tmp/ci-compose.XXXXXX)"
STARTED_SERVICES=0
# Free loopback ports (the compose file publishes ${API_HOST_PORT:-3010} etc.), so a developer's
# own stack on the default ports is left alone.
API_HOST_PORT="$(free_port)"
ISSUER_HOST_PORT="$(free_port)"
PROMETHEUS_HOST_PORT="$(free_port)"
GATEWAY_HOST_PORT="$(free_port)"
export API_HOST_PORT ISSUER_HOST_PORT PROMETHEUS_HOST_PORT GATEWAY_HOST_PORT
PROM="http://127.0.0.1:$PROMETHEUS_HOST_PORT"
COMPOSE_TOOL="${COMPOSE_TOOL:-docker}"
COMPOSE_NAME="$COMPOSE_TOOL"
[ "$COMPOSE_TOOL" != docker ] || COMPOSE_NAME="docker compose"
DOWN_DONE=0
# Zero configuration: an empty env file instead of a developer's .env, and no AUTH0_*/*_HOST_PORT
# overrides from the calling shell beyond the ports chosen above. Project name and env file come
# from the environment, so that the commands below are the README's, word for word.
: > "$WORK/empty.env"
unset AUTH0_DOMAIN AUTH0_ISSUER AUTH0_AUDIENCE AUTH0_JWKS_URI LOG_FORMAT LOG_LEVEL CORS_ALLOWED_ORIGINS WEB_CONCURRENCY
export COMPOSE_PROJECT_NAME="$PROJECT" COMPOSE_ENV_FILES="$WORK/empty.env"
# Build metadata for the api image (build args in docker-compose.yml).
SERVICE_VERSION="$(build_version)"
SERVICE_REVISION="$(build_revision)"
export SERVICE_VERSION SERVICE_REVISION
compose() {
  if [ "$COMPOSE_TOOL" = docker ]; then
    docker compose "$@"
  else
    podman-compose -p "$PROJECT" --env-file "$WORK/empty.env" "$@"
  fi
}

cleanup() {
  local rc=$?
  step_failed
  if [ "$rc" != 0 ]; then
    echo "----- compose ps / logs (last 30 lines each) -----" >&2
    compose ps >&2 2>&1 || true
    for svc in api issuer prometheus gateway upstream redis; do
      compose logs --tail 30 "$svc" >&2 2>&1 || true
    done
  fi
  [ "$DOWN_DONE" = 1 ] || compose down -v -t 30 >/dev/null 2>&1 || true
  # Only stop the background helpers if this stage started them.
  if [ "$STARTED_SERVICES" = 1 ]; then bash "$CONTAINER_TOOLS/services.sh" stop >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "container tooling (shared setup.sh)" container_setup

start_services() {
  local status
  status="$(bash "$CONTAINER_TOOLS/services.sh" status)"
  if [[ "$status" == *"healthcheck-pump: running"* ]]; then
    echo "background services already running (left as they are)"
  else
    STARTED_SERVICES=1
    bash "$CONTAINER_TOOLS/services.sh" start
  fi
}
step "services.sh start (healthcheck pump, API socket)" start_services

step "$COMPOSE_NAME config" compose config --quiet
step "$COMPOSE_NAME up -d --build --wait" compose up -d --build --wait

run_smoke() {
  # pipefail (set above) keeps bin/smoke's exit status through tee.
  bin/smoke --wait 30 --token-url "http://127.0.0.1:$ISSUER_HOST_PORT/oauth/token" \
    "http://127.0.0.1:$API_HOST_PORT" | tee "$WORK/smoke.out"
}
step "bin/smoke against the compose stack" run_smoke

# promql QUERY: instant query against the stack's Prometheus, JSON on stdout
promql() { curl -fsS --max-time 5 "$PROM/api/v1/query" --data-urlencode "query=$1"; }

target_up() {
  local deadline=$(( $(date +%s) + 30 ))
  until promql 'up{job="api"}' | python3 -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
sys.exit(0 if r and r[0]["value"][1] == "1" else 1)'; do
    [ "$(date +%s)" -lt "$deadline" ] || { curl -fsS "$PROM/api/v1/targets"; echo; return 1; }
    sleep 1
  done
  curl -fsS "$PROM/api/v1/targets" | python3 -c '
import json, sys
targets = json.load(sys.stdin)["data"]["activeTargets"]
api = [t for t in targets if t["labels"]["job"] == "api"]
assert api and api[0]["health"] == "up", api
print("target", api[0]["scrapeUrl"], "health", api[0]["health"])'
}
step "Prometheus: target api is up" target_up

counts_match() {
  # The scrape interval is 5 s: poll until a scrape after the smoke run has landed.
  wait_for_smoke_counts "$WORK/smoke.out" "$WORK" 30
}
step "Prometheus: auth_decisions_total == bin/smoke's counts" counts_match

build_info_stamped() {
  local stamp
  stamp="$(compose exec -T api python -c \
    'import os; print(os.environ["SERVICE_VERSION"], os.environ["SERVICE_REVISION"])')"
  [ "$stamp" = "$SERVICE_VERSION $SERVICE_REVISION" ] \
    || { echo "api container has build info '$stamp', expected '$SERVICE_VERSION $SERVICE_REVISION'"; return 1; }
  echo "api image stamped: $stamp"
}
step "api image carries SERVICE_VERSION / SERVICE_REVISION" build_info_stamped

dpop_through_redis() {
  # The README's DPoP walk-through, word for word but for the ports. After the count comparison
  # above: its two decisions are not in bin/smoke's counts.
  local url="http://127.0.0.1:$API_HOST_PORT/api/private" code keys
  .venv/bin/python -m dev_issuer.client --issuer "http://127.0.0.1:$ISSUER_HOST_PORT/" GET "$url" > "$WORK/dpop.h"
  code="$(curl -s -o "$WORK/dpop.out" -w '%{http_code}' -H @"$WORK/dpop.h" "$url")"
  [ "$code" = 200 ] || { echo "DPoP request: $code $(cat "$WORK/dpop.out")"; return 1; }
  code="$(curl -s -o "$WORK/dpop.out" -w '%{http_code}' -H @"$WORK/dpop.h" "$url")"
  if [ "$code" != 401 ] || ! grep -q invalid_dpop_proof "$WORK/dpop.out"; then
    echo "replayed proof: $code $(cat "$WORK/dpop.out")"; return 1
  fi
  keys="$(compose exec -T redis redis-cli --scan --pattern 'dpop-jti:*' | grep -c . || true)"
  [ "$keys" -ge 1 ] || { echo "no replay key in the redis service"; return 1; }
  curl -fsS "http://127.0.0.1:$API_HOST_PORT/readyz" | python3 -c '
import json, sys
store = json.load(sys.stdin)["replay_store"]
assert store["store"] == "redis" and store["status"] == "ready", store
print("readyz replay_store:", store)'
  echo "DPoP 200 then 401 on replay; $keys key(s) in redis"
}
step "DPoP walk-through through the redis service" dpop_through_redis

run_gateway_smoke() {
  # After the count comparison above: these decisions are counted under the policy's rule names.
  bin/smoke --token-url "http://127.0.0.1:$ISSUER_HOST_PORT/oauth/token" \
    --gateway "http://127.0.0.1:$GATEWAY_HOST_PORT" | tee "$WORK/smoke-gateway.out"
}
step "bin/smoke --gateway through the nginx gateway" run_gateway_smoke

readme_gateway_lines() {
  # The README's three gateway lines: 401, 200 with the upstream's echo of X-Auth-Subject, 403.
  local token noperm gw="http://127.0.0.1:$GATEWAY_HOST_PORT/api/messages"
  token="$(.venv/bin/python -m dev_issuer.client token --issuer "http://127.0.0.1:$ISSUER_HOST_PORT/")"
  noperm="$(.venv/bin/python -m dev_issuer.client token --issuer "http://127.0.0.1:$ISSUER_HOST_PORT/" --scope "")"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$gw")" = 401 ] || { echo "gateway without a token: not 401"; return 1; }
  curl -fsS "$gw" -H "Authorization: Bearer $token" | grep -q '"x-auth-subject"' \
    || { echo "gateway with a token: the upstream did not see X-Auth-Subject"; return 1; }
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$gw" -H "Authorization: Bearer $noperm")" = 403 ] \
    || { echo "gateway without read:messages: not 403"; return 1; }
  echo "gateway: 401, 200 (upstream saw X-Auth-Subject), 403"
}
step "README gateway lines (401, 200, 403)" readme_gateway_lines

step "$COMPOSE_NAME down -v" compose down -v
DOWN_DONE=1

no_leftovers() {
  local left
  left="$(podman ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}}')"
  [ -z "$left" ] || { echo "containers left after down: $left"; return 1; }
  left="$(podman volume ls --format '{{.Name}}' | grep "^${PROJECT}[_-]" || true)"
  [ -z "$left" ] || { echo "volumes left after down -v: $left"; return 1; }
  echo "no containers or volumes left"
}
step "nothing left behind" no_leftovers

log "compose stage passed in $(( $(date +%s) - STAGE_T0 ))s"
