#!/usr/bin/env bash
# CI stage "container": hadolint; build the API image (default target) and the dev-issuer image;
# run the API read-only as non-root next to the dev issuer on a private podman network; bin/smoke
# against it; SIGTERM must end it gracefully with exit 0. Also the shared smoke.sh on the API with
# the metrics dir on its own tmpfs (the Kubernetes emptyDir layout).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=.ci/lib/common.sh
. .ci/lib/common.sh

API_IMAGE=localhost/flask-auth0-api:ci
ISSUER_IMAGE=localhost/flask-auth0-api-dev-issuer:ci
AUDIENCE=https://api.dev.local
RUN_ID="ci-$$"
NET="flask-auth0-api-$RUN_ID"
ISSUER_CTR="flask-auth0-api-issuer-$RUN_ID"
API_CTR="flask-auth0-api-$RUN_ID"
WORK="$(mktemp -d /tmp/ci-container.XXXXXX)"

cleanup() {
  local rc=$?
  step_failed
  if [ "$rc" != 0 ] && podman container exists "$API_CTR" 2>/dev/null; then
    echo "----- API container logs (last 40 lines) -----" >&2
    podman logs --tail 40 "$API_CTR" >&2 2>&1 || true
  fi
  podman rm -f -t 2 "$API_CTR" "$ISSUER_CTR" >/dev/null 2>&1 || true
  podman network rm -f "$NET" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "container tooling (shared setup.sh)" container_setup

hadolint_check() {
  venv_tool hadolint
  .venv/bin/hadolint --config .hadolint.yaml Dockerfile
}
step "hadolint Dockerfile (warning level)" hadolint_check

shellcheck_scripts() {
  venv_tool shellcheck
  # bin/smoke's #!/bin/sh makes shellcheck hold it to POSIX sh (no bashisms).
  .venv/bin/shellcheck -x bin/smoke bin/dev bin/test bin/lock .ci/lib/common.sh .ci/stages/container.sh .ci/stages/compose.sh \
    .ci/stages/prometheus.sh .ci/stages/k8s.sh
}
step "shellcheck bin/smoke and the stage scripts" shellcheck_scripts

# --format docker keeps HEALTHCHECK (podman's default OCI format drops it).
VERSION="$(build_version)"
REVISION="$(build_revision)"
step "build API image (default target)" \
  podman build --pull=never --format docker --quiet -t "$API_IMAGE" --build-arg VERSION="$VERSION" \
  --build-arg REVISION="$REVISION" --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
step "build dev-issuer image (--target dev-issuer)" \
  podman build --pull=never --format docker --quiet --target dev-issuer -t "$ISSUER_IMAGE" .

inspect_api_image() {
  local user hc label
  user="$(podman image inspect --format '{{.Config.User}}' "$API_IMAGE")"
  [ "$user" = "10001:10001" ] || { echo "image USER is '$user', expected 10001:10001"; return 1; }
  hc="$(podman image inspect --format '{{if .Config.Healthcheck}}{{index .Config.Healthcheck.Test 0}}{{end}}' "$API_IMAGE")"
  [ "$hc" = CMD ] || { echo "no exec-form HEALTHCHECK in the image (got '$hc')"; return 1; }
  label="$(podman image inspect --format '{{index .Labels "org.opencontainers.image.revision"}}' "$API_IMAGE")"
  [ "$label" = "$REVISION" ] || { echo "image revision label '$label', expected $REVISION"; return 1; }
  # Nothing dev-only or secret in the API image; byte-code compiled at build time.
  podman run --rm --pull=never --read-only --entrypoint python "$API_IMAGE" -c '
import os, sys
bad = [p for p in ("/app/dev_issuer", "/app/tests", "/app/.env", "/app/.git", "/app/bench", "/app/deploy")
       if os.path.exists(p)]
assert not bad, f"unexpected in the API image: {bad}"
assert os.listdir("/app/service/__pycache__"), "service/ is not byte-compiled"
assert os.environ["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/"), "metrics dir outside the /tmp tmpfs"
import importlib.metadata as md
installers = [d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].lower() in
              ("pip", "setuptools", "wheel")] + [p for p in os.listdir("/opt/venv/bin") if p.startswith("pip")]
assert not installers, f"installers left in the runtime venv: {installers}"
stamp = (os.environ["SERVICE_VERSION"], os.environ["SERVICE_REVISION"])
assert stamp == (sys.argv[1], sys.argv[2]), f"build info {stamp}, expected {sys.argv[1:]}"
print("API image: user 10001, no dev/test files, byte-compiled, no pip/setuptools/wheel,",
      "SERVICE_VERSION", stamp[0], "PROMETHEUS_MULTIPROC_DIR", os.environ["PROMETHEUS_MULTIPROC_DIR"])
' "$VERSION" "$REVISION" 2> >(grep -v 'systemd' >&2)
}
step "inspect API image" inspect_api_image

start_pair() {
  podman network create "$NET" >/dev/null
  # DEVELOPMENT issuer, known on the network as "issuer"; tokens carry iss http://issuer:3011/.
  podman run -d --pull=never --name "$ISSUER_CTR" --network "$NET" --network-alias issuer \
    --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
    -e DEV_ISSUER_URL=http://issuer:3011/ -e DEV_ISSUER_AUDIENCE="$AUDIENCE" \
    -p 127.0.0.1::3011 "$ISSUER_IMAGE" >/dev/null 2> >(grep -v systemd >&2)
  # The API exactly as shipped: read-only root, only /tmp writable, non-root, no capabilities.
  podman run -d --pull=never --name "$API_CTR" --network "$NET" \
    --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
    -e AUTH0_ISSUER=http://issuer:3011/ -e AUTH0_AUDIENCE="$AUDIENCE" \
    -p 127.0.0.1::3010 "$API_IMAGE" >/dev/null 2> >(grep -v systemd >&2)
  ISSUER_PORT="$(podman port "$ISSUER_CTR" 3011/tcp | head -n 1 | sed 's/.*://')"
  API_PORT="$(podman port "$API_CTR" 3010/tcp | head -n 1 | sed 's/.*://')"
  echo "issuer on 127.0.0.1:$ISSUER_PORT, API on 127.0.0.1:$API_PORT"
  wait_http "http://127.0.0.1:$ISSUER_PORT/healthz" 30 || { echo "issuer not healthy"; podman logs "$ISSUER_CTR"; return 1; }
  wait_http "http://127.0.0.1:$API_PORT/healthz" 30 || { echo "API not answering /healthz"; return 1; }
  # The image's own HEALTHCHECK passes too (podman has no scheduler here: run it once).
  podman healthcheck run "$API_CTR" 2> >(grep -v systemd >&2)
}
step "start dev issuer + read-only API on network $NET" start_pair

check_runtime() {
  local pid uid
  pid="$(podman inspect --format '{{.State.Pid}}' "$API_CTR")"
  uid="$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")"
  [ "$uid" = 10001 ] || { echo "gunicorn master runs as uid $uid, expected 10001"; return 1; }
  echo "gunicorn master (pid $pid on the host) runs as uid $uid"
}
step "non-root at run time" check_runtime

step "bin/smoke against the container" \
  bin/smoke --wait 30 --token-url "http://127.0.0.1:$ISSUER_PORT/oauth/token" --audience "$AUDIENCE" \
  "http://127.0.0.1:$API_PORT"

check_logs() {
  # Every stdout line is one JSON object with the contract's keys (gunicorn's own lines included).
  podman logs "$API_CTR" 2>/dev/null | python3 -c '
import json, sys
lines = [l for l in sys.stdin.read().splitlines() if l.strip()]
assert lines, "no log lines"
events = []
for line in lines:
    try:
        obj = json.loads(line)
    except ValueError:
        sys.exit(f"not a JSON log line: {line[:200]}")
    missing = {"event", "level", "timestamp"} - obj.keys()
    assert not missing, f"log line lacks {missing}: {line[:200]}"
    events.append(obj["event"])
decisions = events.count("auth_decision")
assert decisions >= 5, f"only {decisions} auth_decision lines"
assert "http_request" in events, "no http_request access lines"
access = events.count("http_request")
print(f"{len(lines)} JSON log lines, {decisions} auth_decision, {access} http_request")
'
}
step "API logs are JSON lines" check_logs

graceful_stop() {
  local t0 took code
  t0=$(date +%s.%N)
  # 25 s > gunicorn's graceful_timeout (20 s): a SIGKILL would show as exit 137.
  podman stop -t 25 "$API_CTR" >/dev/null 2> >(grep -v systemd >&2)
  took="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')"
  code="$(podman inspect --format '{{.State.ExitCode}}' "$API_CTR")"
  echo "SIGTERM -> exit $code in ${took}s"
  [ "$code" = 0 ] || return 1
  awk -v t="$took" 'BEGIN {exit !(t < 20)}' || { echo "shutdown took ${took}s"; return 1; }
  podman logs "$API_CTR" > "$WORK/api.log" 2>&1
  grep -q 'Handling signal: term' "$WORK/api.log" || { echo "gunicorn logged no SIGTERM handling"; return 1; }
  podman stop -t 10 "$ISSUER_CTR" >/dev/null 2>&1
  code="$(podman inspect --format '{{.State.ExitCode}}' "$ISSUER_CTR")"
  echo "dev issuer: SIGTERM -> exit $code"
  [ "$code" = 0 ]
}
step "SIGTERM: graceful exit 0" graceful_stop

# The Kubernetes layout (the metrics dir is its own emptyDir inside /tmp) through the shared tool:
# on_starting must wipe a mount point it cannot remove.
step "shared smoke.sh: k8s-like mounts, non-root, graceful stop" \
  bash "$CONTAINER_TOOLS/smoke.sh" "$API_IMAGE" --path /healthz --expect-body '"ok"' \
  --require-non-root --require-graceful-stop --stop-timeout 25 \
  -e AUTH0_ISSUER=https://issuer.invalid/ -e AUTH0_AUDIENCE="$AUDIENCE" \
  -- --read-only --tmpfs /tmp --tmpfs /tmp/prometheus-multiproc:mode=1777 --cap-drop ALL

log "container stage passed in $(( $(date +%s) - STAGE_T0 ))s"
