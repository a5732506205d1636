#!/usr/bin/env bash
# CI stage "issuer-trust": a named tenant never leaves the dev issuer trusted, and a plain-http
# issuer stops the shipped image at start. `docker compose config` and podman-compose render the
# unmodified docker-compose.yml for several .env files (tests/repo/test_compose_tenant.py, which
# bin/test skips on a machine without compose tools); then the API image really starts: exit 78
# with one line naming AUTH0_ISSUER for http://login.example.com/, and serving with
# AUTH0_ALLOW_INSECURE_ISSUER=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=.ci/lib/common.sh
. .ci/lib/common.sh

API_IMAGE=localhost/flask-auth0-api:ci-issuer-trust
CTR="flask-auth0-api-issuer-trust-$$"
WORK="$(mktemp -d /tmp/ci-issuer-trust.XXXXXX)"

cleanup() {
  local rc=$?
  step_failed
  podman rm -f -t 2 "$CTR" >/dev/null 2>&1 || true
  podman rmi "$API_IMAGE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "container tooling (shared setup.sh)" container_setup

step "compose config: a tenant in .env or the shell is trusted, never the dev issuer" \
  env REQUIRE_COMPOSE=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/repo/test_compose_tenant.py

step "build API image" podman build --pull=never --format docker --quiet -t "$API_IMAGE" .

refused_at_start() {
  local code=0
  podman run --rm --pull=never --read-only --tmpfs /tmp \
    -e AUTH0_ISSUER=http://login.example.com/ -e AUTH0_AUDIENCE=https://api.example.com \
    "$API_IMAGE" >"$WORK/out" 2>&1 || code=$?
  [ "$code" = 78 ] || { cat "$WORK/out"; echo "exit $code, expected 78"; return 1; }
  [ "$(grep -c AUTH0_ISSUER "$WORK/out")" = 1 ] || { cat "$WORK/out"; echo "expected one line naming AUTH0_ISSUER"; return 1; }
  ! grep -q Traceback "$WORK/out" || { cat "$WORK/out"; return 1; }
  grep AUTH0_ISSUER "$WORK/out"
}
step "image: plain-http issuer -> exit 78, one line" refused_at_start

allowed_by_flag() {
  local port
  podman run -d --pull=never --name "$CTR" --read-only --tmpfs /tmp \
    -e AUTH0_ISSUER=http://login.example.com/ -e AUTH0_AUDIENCE=https://api.example.com \
    -e AUTH0_ALLOW_INSECURE_ISSUER=1 -p 127.0.0.1::3010 "$API_IMAGE" >/dev/null 2> >(grep -v systemd >&2)
  port="$(podman port "$CTR" 3010/tcp | head -n 1 | sed 's/.*://')"
  wait_http "http://127.0.0.1:$port/healthz" 30 || { podman logs --tail 20 "$CTR"; return 1; }
  echo "serving on 127.0.0.1:$port with AUTH0_ALLOW_INSECURE_ISSUER=1"
}
step "image: plain-http issuer with AUTH0_ALLOW_INSECURE_ISSUER=1 -> starts" allowed_by_flag

log "issuer-trust stage passed in $(( $(date +%s) - STAGE_T0 ))s"
