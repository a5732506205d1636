# Helpers sourced by .ci/stages/{container,compose,prometheus,k8s}.sh (bash, run from the repo root).
# shellcheck shell=bash

# The shared tooling: ../shared beside the clone (CI), else the workplace copy.
SHARED="${SHARED:-$(cd .. && pwd)/shared}"
[ -d "$SHARED/container" ] || SHARED=/work/shared
CONTAINER_TOOLS="$SHARED/container"

STAGE="${STAGE:-$(basename "$0" .sh)}"
STAGE_T0=$(date +%s)

log() { printf '[%s %s +%ss] %s\n' "$STAGE" "$(date +%T)" "$(( $(date +%s) - STAGE_T0 ))" "$*"; }
die() { printf '[%s] FAILED: %s\n' "$STAGE" "$*" >&2; exit 1; }

# step NAME CMD...: run CMD under errexit (a failing command inside a step function ends the
# stage), logging its duration. Not `CMD || ...`: that would switch errexit off inside CMD.
_STEP_NAME=""
step() {
  _STEP_NAME="$1"
  shift
  _STEP_T0=$(date +%s.%N)
  log "-> $_STEP_NAME"
  "$@"
  log "<- $_STEP_NAME ($(awk -v a="$_STEP_T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s)"
  _STEP_NAME=""
}

# step_failed: in an EXIT trap, name the step that failed (if one did).
step_failed() {
  [ -z "$_STEP_NAME" ] || printf '[%s] FAILED in step: %s (after %s s)\n' "$STAGE" "$_STEP_NAME" \
    "$(awk -v a="$_STEP_T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')" >&2
}

# The Prometheus tag docker-compose.yml pins: the one source of truth for the stand-in's tag.
prometheus_tag() {
  sed -n 's#^[[:space:]]*image:[[:space:]]*prom/prometheus:\([^[:space:]]*\).*#\1#p' docker-compose.yml | head -n 1
}

# The nginx tag docker-compose.yml pins (the gateway service).
nginx_tag() {
  sed -n 's#^[[:space:]]*image:[[:space:]]*nginx:\([^[:space:]]*\).*#\1#p' docker-compose.yml | head -n 1
}

# The Redis tag docker-compose.yml pins (its `redis` service, the DPoP replay store).
redis_tag() {
  sed -n 's#^[[:space:]]*image:[[:space:]]*redis:\([^[:space:]]*\).*#\1#p' docker-compose.yml | head -n 1
}

# Container tooling (podman, stand-in python, prom/prometheus, nginx and redis images,
# podman-compose and Docker Compose v2 as `docker compose`); idempotent.
container_setup() {
  local tag ngx redis
  tag="$(prometheus_tag)"
  [ -n "$tag" ] || die "no prom/prometheus:<tag> in docker-compose.yml"
  ngx="$(nginx_tag)"
  [ -n "$ngx" ] || die "no nginx:<tag> in docker-compose.yml"
  redis="$(redis_tag)"
  [ -n "$redis" ] || die "no redis:<tag> in docker-compose.yml"
  WITH_COMPOSE_V2=1 WITH_PROMETHEUS=1 PROMETHEUS_TAGS="$tag" WITH_NGINX=1 NGINX_TAGS="$ngx" \
    WITH_REDIS=1 REDIS_TAGS="$redis" \
    bash "$CONTAINER_TOOLS/setup.sh"
}

# apt_ensure PACKAGE...: install Debian packages that are missing (a fresh machine may lack them).
apt_ensure() {
  local missing=() pkg
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ "${#missing[@]}" = 0 ] && return 0
  echo "apt-get install ${missing[*]}"
  # A daemon's postinst (nginx, redis-server) would start it on its default port: the tests start
  # their own. policy-rc.d exit 101 = "action forbidden" (Debian policy, invoke-rc.d(8)).
  local policy=/usr/sbin/policy-rc.d made=0 rc=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; made=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq || rc=$?
  [ "$rc" != 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  [ "$made" = 0 ] || rm -f "$policy"
  return "$rc"
}

# venv_tool NAME: make sure .venv/bin/NAME exists (a fresh .venv may predate requirements-dev.txt).
venv_tool() {
  [ -x ".venv/bin/$1" ] || .venv/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.txt
  [ -x ".venv/bin/$1" ] || die ".venv/bin/$1 missing after installing requirements-dev.txt"
}

# venv_module NAME: make sure .venv's Python can import NAME.
venv_module() {
  .venv/bin/python -c "import $1" 2>/dev/null \
    || .venv/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.txt
  .venv/bin/python -c "import $1" || die ".venv cannot import $1 after installing requirements-dev.txt"
}

# Build metadata stamped into the image (SERVICE_VERSION / SERVICE_REVISION, OCI labels).
build_version() { git describe --tags --always --dirty 2>/dev/null || echo 0.0.0-dev; }
build_revision() { git rev-parse HEAD 2>/dev/null || echo unknown; }

# free_port: an unused loopback TCP port.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http URL SECONDS [STATUS]: poll until URL answers STATUS (default 200).
wait_http() {
  local url="$1" deadline=$(( $(date +%s) + $2 )) want="${3:-200}"
  until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null)" = "$want" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

# Poll Prometheus (through the calling stage's `promql` function) until
# sum by (route, outcome) (auth_decisions_total) equals the counts bin/smoke printed.
# Usage: wait_for_smoke_counts SMOKE_OUTPUT WORKDIR SECONDS
wait_for_smoke_counts() {
  local deadline=$(( $(date +%s) + $3 ))
  until promql 'sum by (route, outcome) (auth_decisions_total{job="api"})' > "$2/q.json" \
        && python3 .ci/lib/prom_counts.py "$1" "$2/q.json"; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "auth_decisions_total never matched bin/smoke's counts"; return 1; }
    sleep 1
  done
}
