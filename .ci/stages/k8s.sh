#!/usr/bin/env bash
# CI stage "k8s": render every kustomize overlay with `kubectl kustomize`, validate the output with
# kubernetes-validate --strict (several Kubernetes versions) and checkov (skips carry reasons),
# checkov on the Dockerfile, yamllint on the deployment YAML, and tests/repo/test_manifests.py (probe
# paths, ports and env names in deploy/ and docker-compose.yml against what the service serves
# and reads).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=.ci/lib/common.sh
. .ci/lib/common.sh

OVERLAYS=(dev prod gateway)
K8S_VERSIONS=(1.30 1.35)
WORK="$(mktemp -d /tmp/ci-k8s.XXXXXX)"
cleanup() {
  local rc=$?
  step_failed
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

# checkov skips, per overlay. Each entry: CHECK_ID and why it does not apply.
declare -A SKIP_REASON=(
  [CKV_K8S_43]="image digests are set at release time (kustomize edit set image NAME@sha256:...); the overlays carry tags"
  [CKV_K8S_15]="dev (and gateway, built on dev) only: images are loaded into kind/minikube, not pulled, so imagePullPolicy is IfNotPresent"
  [CKV_K8S_35]="component dpop-redis: AUTH0_DPOP_REPLAY_URL is read from the environment, so the Secret's url key is an env var (a password can be a mounted file instead: AUTH0_DPOP_REPLAY_PASSWORD_FILE)"
)
declare -A SKIPS=(
  [dev]="CKV_K8S_43,CKV_K8S_15,CKV_K8S_35"
  [prod]="CKV_K8S_43"
  [gateway]="CKV_K8S_43,CKV_K8S_15,CKV_K8S_35"
)

command -v kubectl >/dev/null || die "kubectl is not installed: it renders the kustomize overlays (kubectl kustomize)"

# checkov and kubernetes-validate live in their own venv, keyed by requirements-ci.txt's content.
TOOLS_VENV="${CI_TOOLS_DIR:-/opt/flask-auth0-api-ci}/venv-$(sha256sum requirements-ci.txt | cut -c1-12)"
ci_tools() {
  if [ -x "$TOOLS_VENV/bin/checkov" ] && [ -x "$TOOLS_VENV/bin/kubernetes-validate" ]; then
    echo "reusing $TOOLS_VENV"
    return 0
  fi
  apt_ensure python3-venv
  rm -rf "$TOOLS_VENV"
  python3 -m venv "$TOOLS_VENV"
  # (grep: this machine's pip config names local indexes that may be absent; pip warns per package)
  "$TOOLS_VENV/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r requirements-ci.txt 2>&1 \
    | { grep -v '^WARNING: Location' || true; }
}
step "CI tools venv (checkov, kubernetes-validate)" ci_tools
venv_tool yamllint

step "yamllint deploy/ docker-compose.yml" .venv/bin/yamllint --strict -d \
  '{extends: default, rules: {line-length: {max: 120}, document-start: disable, comments: {min-spaces-from-content: 1}}}' \
  deploy docker-compose.yml .hadolint.yaml

render() { # OVERLAY
  kubectl kustomize "deploy/overlays/$1" > "$WORK/$1.yaml"
  grep -c '^kind:' "$WORK/$1.yaml" | xargs -I{} echo "$1: {} objects"
}

validate() { # OVERLAY VERSION
  "$TOOLS_VENV/bin/kubernetes-validate" -k "$2" --strict - < "$WORK/$1.yaml" > "$WORK/kv.out" 2>&1 \
    || { cat "$WORK/kv.out"; return 1; }
  # Only the operator's CRDs (ServiceMonitor, PrometheusRule) may lack a schema: a WARN about any
  # other kind (say a mistyped apiVersion) would otherwise pass silently. tests/repo check those two.
  if grep 'WARN' "$WORK/kv.out" \
      | grep -Ev 'kind (ServiceMonitor|PrometheusRule) with api version monitoring.coreos.com/v1'; then
    return 1
  fi
  echo "$1 @ $2: $(grep -c 'passed for resource' "$WORK/kv.out") resources valid (strict)"
}

checkov_overlay() { # OVERLAY
  local id
  for id in ${SKIPS[$1]//,/ }; do echo "skip $id: ${SKIP_REASON[$id]}"; done
  mkdir -p "$WORK/checkov-$1"
  cp "$WORK/$1.yaml" "$WORK/checkov-$1/rendered.yaml"
  "$TOOLS_VENV/bin/checkov" --quiet --compact --skip-download --framework kubernetes \
    --skip-check "${SKIPS[$1]}" -d "$WORK/checkov-$1"
}

for overlay in "${OVERLAYS[@]}"; do
  step "kubectl kustomize deploy/overlays/$overlay" render "$overlay"
  for version in "${K8S_VERSIONS[@]}"; do
    step "kubernetes-validate --strict $overlay (Kubernetes $version)" validate "$overlay" "$version"
  done
  step "checkov $overlay" checkov_overlay "$overlay"
done

step "checkov Dockerfile" "$TOOLS_VENV/bin/checkov" --quiet --compact --skip-download \
  --framework dockerfile -f Dockerfile

venv_tool pytest
step "pytest tests/repo/test_manifests.py" .venv/bin/pytest -q -p no:cacheprovider tests/repo/test_manifests.py

log "k8s stage passed in $(( $(date +%s) - STAGE_T0 ))s"
