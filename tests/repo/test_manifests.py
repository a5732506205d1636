"""The shipping files (deploy/, docker-compose.yml, Dockerfile) agree with the service they ship.

Probe paths must be routes the app really serves, ports must be the port gunicorn binds, env names
must be names the service (or gunicorn.conf.py) really reads, and every overlay's settings must be
accepted by ``Settings.from_env``. Overlays are rendered with ``kubectl kustomize`` (skipped where
kubectl is missing; CI's k8s stage requires it); the base is read from its files directly.
"""

from __future__ import annotations

import ast
import base64
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from dev_issuer.config import DEFAULT_PORT as ISSUER_DEFAULT_PORT
from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod", "gateway")
UID = 10001
API_PORT = 3010
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


# ---------------------------------------------------------------------------------------------
# What the service really reads, binds and serves
# ---------------------------------------------------------------------------------------------


def _string_constants(path: Path) -> set[str]:
    """Every string literal in a Python file."""
    tree = ast.parse(path.read_text())
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _environ_reads(path: Path) -> set[str]:
    """Names a Python file reads with ``os.environ.get("X")``, ``os.environ["X"]`` or
    ``_int_env("X", ...)`` (gunicorn.conf.py's validating reader)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "_int_env" and node.args:
            if isinstance(node.args[0], ast.Constant):
                names.add(node.args[0].value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target, args = node.func.value, node.args
            if node.func.attr == "get" and ast.unparse(target) == "os.environ" and args:
                if isinstance(args[0], ast.Constant):
                    names.add(args[0].value)
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            if isinstance(node.slice, ast.Constant):
                names.add(node.slice.value)
    return names


def service_env_names() -> frozenset[str]:
    """Env names the service reads: the one declaration in service.config."""
    from service.config import ENV_VARIABLES

    return ENV_VARIABLES


def test_every_env_name_read_is_declared_once_in_config() -> None:
    """service/config.py's variable literals and gunicorn.conf.py's reads are all declared."""
    from service.config import DEFAULTS
    from service.config import NO_DEFAULT

    literals = _string_constants(ROOT / "service" / "config.py")
    config_names = {s for s in literals if re.fullmatch(r"[A-Z0-9]+(_[A-Z0-9]+)+", s)}
    read = config_names | _environ_reads(ROOT / "gunicorn.conf.py")
    assert {"AUTH0_AUDIENCE", "PORT", "PROMETHEUS_MULTIPROC_DIR"} <= read
    undeclared = sorted(read - service_env_names())
    assert not undeclared, f"read but not in DEFAULTS or NO_DEFAULT: {undeclared}"
    assert not set(DEFAULTS) & set(NO_DEFAULT), "a variable is declared twice"


def gunicorn_default(name: str) -> str:
    """The default of an env setting gunicorn.conf.py reads (pinned in service.config.DEFAULTS)."""
    from service.config import DEFAULTS

    assert name in _environ_reads(ROOT / "gunicorn.conf.py"), f"gunicorn.conf.py does not read {name}"
    return DEFAULTS[name][0]


@cache
def served_get_paths() -> frozenset[str]:
    """Paths the Flask app answers with GET (built with throwaway settings; no network at build)."""
    from service.app import create_app

    settings = Settings.from_env(
        {"AUTH0_ISSUER": "http://127.0.0.1:9/", "AUTH0_AUDIENCE": "https://api.test"}
    )
    app = create_app(settings)
    return frozenset(r.rule for r in app.url_map.iter_rules() if "GET" in (r.methods or ()))


# ---------------------------------------------------------------------------------------------
# The shipping files
# ---------------------------------------------------------------------------------------------


def _load_all(path: Path) -> list[dict[str, Any]]:
    """All YAML documents of a file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@cache
def base_objects() -> tuple[dict[str, Any], ...]:
    """The base's resources, read from the files its kustomization lists."""
    base = ROOT / "deploy" / "base"
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        objects.extend(_load_all(base / name))
    return tuple(objects)


def service_monitor() -> dict[str, Any]:
    """The ServiceMonitor component's object."""
    (monitor,) = _load_all(ROOT / "deploy" / "components" / "servicemonitor" / "servicemonitor.yaml")
    return monitor


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    """An overlay rendered by ``kubectl kustomize`` (the test skips without kubectl)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (CI's k8s stage requires it)")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy" / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def one(objects: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single object of a kind (and name)."""
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def api_deployment(objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The API's Deployment."""
    return one(objects, "Deployment", "flask-auth0-api")


def api_container(deployment: dict[str, Any]) -> dict[str, Any]:
    """The API container of a Deployment."""
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "api"]
    return container


def container_env(objects: tuple[dict[str, Any], ...], container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets: envFrom ConfigMaps, then env values and Secret keys."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(one(objects, "ConfigMap", ref)["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:  # a Secret's key (the rendered Secret carries it base64-encoded)
            ref = item["valueFrom"]["secretKeyRef"]
            encoded = one(objects, "Secret", ref["name"])["data"][ref["key"]]
            env[item["name"]] = base64.b64decode(encoded).decode()
    return env


@cache
def compose() -> dict[str, Any]:
    """docker-compose.yml as parsed YAML (before interpolation)."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


_REFERENCE = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-+])(?P<arg>.*))?", re.S)


def _closing_brace(value: str, start: int) -> int:
    """Index of the ``}`` closing the ``${`` that opens at ``start`` (nested ones skipped)."""
    depth, i = 0, start
    while i < len(value):
        if value.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if value[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise AssertionError(f"unclosed ${{ in {value!r}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR-x}``, ``${VAR:-x}``, ``${VAR+x}``, ``${VAR:+x}``, nested."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if not value.startswith("${", i):
            assert value[i] != "$", f"unsupported interpolation in {value!r}"
            out.append(value[i])
            i += 1
            continue
        end = _closing_brace(value, i)
        m = _REFERENCE.fullmatch(value[i + 2 : end])
        assert m, f"unsupported interpolation in {value!r}"
        name, op, arg = m["name"], m["op"], m["arg"] or ""
        present = name in env if op in ("-", "+") else bool(env.get(name))
        if op in ("-", ":-"):
            out.append(env[name] if present else interpolate(arg, env))
        elif op in ("+", ":+"):
            out.append(interpolate(arg, env) if present else "")
        else:
            out.append(env.get(name, ""))
        i = end + 1
    return "".join(out)


def compose_env(service: str, dotenv: dict[str, str]) -> dict[str, str]:
    """A compose service's environment after interpolation with a given .env."""
    raw = compose()["services"][service]["environment"]
    return {k: interpolate(str(v), dotenv) for k, v in raw.items()}


def dockerfile_stage(target: str) -> list[str]:
    """The instructions (continuation lines joined) of one Dockerfile stage."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    stages: dict[str, list[str]] = {}
    current = ""
    for line in lines:
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if m:
            current = m.group(1)
            stages[current] = []
        elif current:
            stages[current].append(line)
    return stages[target]


def final_dockerfile_stage() -> str:
    """Name of the last stage: what a plain `docker build .` produces."""
    names = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M | re.I)
    return names[-1]


def all_deployment_sets() -> Iterator[tuple[str, tuple[dict[str, Any], ...]]]:
    """The base and every rendered overlay."""
    yield "base", base_objects()
    for overlay in OVERLAYS:
        yield overlay, rendered(overlay)


# ---------------------------------------------------------------------------------------------
# Probes and health checks hit routes the app serves
# ---------------------------------------------------------------------------------------------


def test_kubernetes_probes_hit_served_routes() -> None:
    """Startup/liveness on /healthz (issuer-independent), readiness on /readyz, all served."""
    container = api_container(api_deployment(base_objects()))
    paths = {probe: container[probe]["httpGet"]["path"] for probe in PROBES}
    assert paths == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    assert set(paths.values()) <= served_get_paths()
    for probe in PROBES:
        assert container[probe]["httpGet"]["port"] == "http"


def test_compose_and_dockerfile_healthchecks_hit_served_routes() -> None:
    """Every URL in a healthcheck is a served path on the port the process listens on."""
    api_check = " ".join(compose()["services"]["api"]["healthcheck"]["test"])
    issuer_check = " ".join(compose()["services"]["issuer"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{API_PORT}/readyz" in api_check
    assert f"http://127.0.0.1:{ISSUER_DEFAULT_PORT}/healthz" in issuer_check
    healthcheck = next(i for i in dockerfile_stage("api") if i.startswith("HEALTHCHECK"))
    assert "/healthz" in healthcheck and f"'{API_PORT}'" in healthcheck
    assert {"/healthz", "/readyz", "/metrics"} <= served_get_paths()


def test_prometheus_scrapes_the_metrics_route() -> None:
    """The compose scrape config and the ServiceMonitor both read /metrics from the API port."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "api"]
    assert job.get("metrics_path", "/metrics") == "/metrics" in served_get_paths()
    assert job["static_configs"] == [{"targets": [f"api:{API_PORT}"]}]
    assert "api" in compose()["services"]
    assert [e["path"] for e in service_monitor()["spec"]["endpoints"]] == ["/metrics"]


# ---------------------------------------------------------------------------------------------
# Ports
# ---------------------------------------------------------------------------------------------


def test_ports_match_gunicorn_bind() -> None:
    """gunicorn's default port is the one EXPOSEd, published, targeted and scraped."""
    assert gunicorn_default("PORT") == str(API_PORT)
    assert f"EXPOSE {API_PORT}" in dockerfile_stage("api")
    assert f"EXPOSE {ISSUER_DEFAULT_PORT}" in dockerfile_stage("dev-issuer")
    assert compose()["services"]["api"]["ports"] == [f"127.0.0.1:${{API_HOST_PORT:-{API_PORT}}}:{API_PORT}"]
    issuer_ports = compose()["services"]["issuer"]["ports"]
    assert issuer_ports == [f"127.0.0.1:${{ISSUER_HOST_PORT:-{ISSUER_DEFAULT_PORT}}}:{ISSUER_DEFAULT_PORT}"]
    container = api_container(api_deployment(base_objects()))
    assert container["ports"] == [{"name": "http", "containerPort": API_PORT, "protocol": "TCP"}]
    # The pod relies on gunicorn's default port: a PORT override would break the named port.
    assert "PORT" not in {e["name"] for e in container["env"]}


def test_every_published_port_is_loopback_only() -> None:
    """docker compose up exposes nothing beyond 127.0.0.1."""
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_service_servicemonitor_and_networkpolicy_agree_on_port_names() -> None:
    """Service targets the container's named port; ServiceMonitor names a Service port."""
    objects = base_objects()
    service = one(objects, "Service")
    container_ports = {p["name"]: p["containerPort"] for p in api_container(api_deployment(objects))["ports"]}
    service_port_names = {p["name"] for p in service["spec"]["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in container_ports
    monitor = service_monitor()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_port_names
    policy = one(objects, "NetworkPolicy")
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            assert port["port"] in container_ports


def test_prod_renders_the_service_monitor_for_its_service() -> None:
    """prod includes the ServiceMonitor component, in the Service's namespace, selecting it."""
    objects = rendered("prod")
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert not [o for o in rendered("dev") if o["kind"] == "ServiceMonitor"]


def test_selectors_match_the_pods() -> None:
    """Service, ServiceMonitor, PDB, NetworkPolicy select the API pods; the HPA scales them."""
    objects = base_objects()
    deployment = api_deployment(objects)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = one(objects, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = service_monitor()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        obj = one(objects, kind)
        selector = obj["spec"]["selector" if kind == "PodDisruptionBudget" else "podSelector"]
        assert selector["matchLabels"].items() <= pod_labels.items(), kind
    target = one(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


# ---------------------------------------------------------------------------------------------
# Env names and settings
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_env_names_are_read_and_settings_valid(overlay: str) -> None:
    """Every env name the pod gets is read by the service, and the settings load."""
    objects = rendered(overlay)
    env = container_env(objects, api_container(api_deployment(objects)))
    unknown = set(env) - service_env_names()
    assert not unknown, f"{overlay}: env names the service never reads: {sorted(unknown)}"
    settings = Settings.from_env(env)
    if overlay in ("dev", "gateway"):  # gateway: the dev overlay plus deploy/components/gateway
        assert settings.issuer == "http://issuer:3011/"
        assert settings.audience == "https://api.dev.local"
    else:
        assert settings.issuer.startswith("https://")


def test_dev_overlay_issuer_matches_the_api_settings() -> None:
    """The dev issuer signs with the identifier and audience the dev API expects."""
    objects = rendered("dev")
    api_env = container_env(objects, api_container(api_deployment(objects)))
    issuer = one(objects, "Deployment", "issuer")
    (container,) = issuer["spec"]["template"]["spec"]["containers"]
    issuer_env = {e["name"]: e["value"] for e in container["env"]}
    assert issuer_env["DEV_ISSUER_URL"] == api_env["AUTH0_ISSUER"]
    assert issuer_env["DEV_ISSUER_AUDIENCE"] == api_env["AUTH0_AUDIENCE"]
    assert one(objects, "Service", "issuer")["spec"]["ports"][0]["port"] == ISSUER_DEFAULT_PORT


def test_compose_env_names_are_read() -> None:
    """The API service's environment holds only names the service reads."""
    unknown = set(compose()["services"]["api"]["environment"]) - service_env_names()
    assert not unknown, f"docker-compose.yml api env names never read: {sorted(unknown)}"


def test_compose_defaults_use_the_dev_issuer() -> None:
    """Zero configuration: the API trusts the dev issuer under its in-network name."""
    settings = Settings.from_env(compose_env("api", {}))
    issuer_env = compose_env("issuer", {})
    assert settings.issuer == issuer_env["DEV_ISSUER_URL"] == "http://issuer:3011/"
    assert settings.audience == issuer_env["DEV_ISSUER_AUDIENCE"] == "https://api.dev.local"


@pytest.mark.parametrize("issuer_line", [{}, {"AUTH0_ISSUER": ""}], ids=["issuer_unset", "issuer_empty"])
def test_compose_env_file_switches_to_the_tenant(issuer_line: dict[str, str]) -> None:
    """A .env with AUTH0_DOMAIN and AUTH0_AUDIENCE uses the real tenant, never the dev issuer."""
    dotenv = {"AUTH0_DOMAIN": "tenant.eu.auth0.com", "AUTH0_AUDIENCE": "https://api.example.com"}
    settings = Settings.from_env(compose_env("api", {**dotenv, **issuer_line}))
    assert settings.issuer == "https://tenant.eu.auth0.com/"
    assert settings.audience == "https://api.example.com"
    assert compose_env("issuer", dotenv)["DEV_ISSUER_AUDIENCE"] != "https://api.example.com"


def test_env_example_documents_the_tenant_switch() -> None:
    """.env.example names every variable the switch needs, and nothing is live by default."""
    text = (ROOT / ".env.example").read_text()
    for name in ("AUTH0_DOMAIN", "AUTH0_AUDIENCE", "AUTH0_ISSUER"):
        assert re.search(rf"^# {name}=", text, re.M), name
    assert not [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def test_dockerfile_env_names_are_read() -> None:
    """ENV in the API stage: Python's own variables or names the service reads."""
    python_env = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
    names: set[str] = set()
    for stage in ("runtime-base", "api"):
        for instruction in dockerfile_stage(stage):
            if instruction.startswith("ENV "):
                names.update(re.findall(r"([A-Z_][A-Z0-9_]*)=", instruction))
    assert names - python_env <= service_env_names()
    assert {"PROMETHEUS_MULTIPROC_DIR", "WEB_CONCURRENCY", "PYTHONUNBUFFERED"} <= names


# ---------------------------------------------------------------------------------------------
# Security context, graceful shutdown, scaling
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_pods_are_restricted(name: str) -> None:
    """Every Deployment runs as uid 10001, read-only, no capabilities, RuntimeDefault seccomp."""
    objects = base_objects() if name == "base" else rendered(name)
    for deployment in [o for o in objects if o["kind"] == "Deployment"]:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] != "default"
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == UID and ctx["runAsGroup"] == UID
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        mounts_by_volume = {}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc.get("privileged", False) is False
            assert {"requests", "limits"} <= container["resources"].keys()
            assert "memory" in container["resources"]["limits"]
            assert {p for p in PROBES if p in container} == set(PROBES)
            mounts_by_volume.update({m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])})
        assert "/tmp" in mounts_by_volume.values()
        for volume in pod["volumes"]:
            if "configMap" in volume:  # read-only data (the gateway policy), not writable space
                assert mounts_by_volume[volume["name"]].startswith("/etc/"), volume["name"]
                continue
            assert "sizeLimit" in volume["emptyDir"], volume["name"]


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_api_pod_writable_paths_and_workers(name: str) -> None:
    """The metrics dir is an emptyDir of its own; WEB_CONCURRENCY is explicit."""
    objects = base_objects() if name == "base" else rendered(name)
    container = api_container(api_deployment(objects))
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert int(env["WEB_CONCURRENCY"]) >= 1
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"] in mounts
    image_default = next(
        re.search(r"PROMETHEUS_MULTIPROC_DIR=(\S+)", i).group(1)  # type: ignore[union-attr]
        for i in dockerfile_stage("api")
        if "PROMETHEUS_MULTIPROC_DIR=" in i
    )
    assert env["PROMETHEUS_MULTIPROC_DIR"] == image_default


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_graceful_rollout(name: str) -> None:
    """Grace period >= preStop + gunicorn graceful_timeout + 5 s; surge without unavailability."""
    objects = base_objects() if name == "base" else rendered(name)
    deployment = api_deployment(objects)
    pod = deployment["spec"]["template"]["spec"]
    container = api_container(deployment)
    env = {e["name"]: e.get("value") for e in container["env"]}
    graceful = int(env.get("GUNICORN_GRACEFUL_TIMEOUT") or gunicorn_default("GUNICORN_GRACEFUL_TIMEOUT"))
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 5
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + graceful + 5
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # The HPA owns the scale: a replicas field would reset it on every apply.
    assert "replicas" not in deployment["spec"]
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pdb = one(objects, "PodDisruptionBudget")
    assert "minAvailable" not in pdb["spec"]


def test_compose_api_hardening_and_stop_grace() -> None:
    """The compose API runs like the image in production: read-only, uid 10001, no caps."""
    api = compose()["services"]["api"]
    assert api["read_only"] is True
    assert api["user"] == f"{UID}:{UID}"
    assert api["cap_drop"] == ["ALL"]
    assert "/tmp" in api["tmpfs"]
    grace = int(api["stop_grace_period"].removesuffix("s"))
    assert grace > int(gunicorn_default("GUNICORN_GRACEFUL_TIMEOUT"))
    assert api["depends_on"]["issuer"]["condition"] == "service_healthy"
    prometheus = compose()["services"]["prometheus"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prometheus["image"])
    # Started, not healthy: Prometheus must come up to debug an API that never turns ready.
    assert prometheus["depends_on"]["api"]["condition"] == "service_started"


def test_dockerfile_final_stage_is_the_api() -> None:
    """A plain build gives the API: non-root numeric user, exec-form gunicorn CMD, no dev code."""
    assert final_dockerfile_stage() == "api"
    api = dockerfile_stage("api")
    assert f"USER {UID}:{UID}" in api
    assert 'CMD ["gunicorn", "-c", "gunicorn.conf.py"]' in api
    copies = [i for i in api if i.startswith("COPY")]
    assert all("dev_issuer" not in c and "tests" not in c for c in copies), copies


def test_gateway_overlay_mounts_the_policy_where_gateway_policy_points() -> None:
    """deploy/components/gateway: the policy ConfigMap is mounted at GATEWAY_POLICY, and it parses."""
    from service.gateway_policy import parse_policy

    objects = rendered("gateway")
    container = api_container(api_deployment(objects))
    env = container_env(objects, container)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "gateway-policy")
    assert mount["readOnly"] is True
    assert env["GATEWAY_POLICY"] == f"{mount['mountPath']}/policy.yaml"
    maps = [o for o in objects if o["kind"] == "ConfigMap" and "policy.yaml" in o.get("data", {})]
    assert len(maps) == 1
    assert parse_policy(maps[0]["data"]["policy.yaml"]).rules


def test_gateway_overlay_admits_only_the_gateway_namespace_to_the_app_port() -> None:
    """The NetworkPolicy's app-port rule names the gateway's namespace as its only source."""
    policy = one(rendered("gateway"), "NetworkPolicy", "flask-auth0-api")
    http_rule = policy["spec"]["ingress"][0]
    assert [p["port"] for p in http_rule["ports"]] == ["http"]
    assert http_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway-system"}}}
    ]


def test_prod_and_compose_name_the_urls_clients_call_for_dpop() -> None:
    """PUBLIC_URL is set where DPoP is on: htu never follows the client's own Host header."""
    objects = rendered("prod")
    prod = Settings.from_env(container_env(objects, api_container(api_deployment(objects))))
    assert prod.dpop != "disabled" and prod.public_urls == ("https://api.example.com",)
    compose = Settings.from_env(compose_env("api", {}))
    assert compose.public_urls == ("http://127.0.0.1:3010", "http://localhost:3010")
    moved = Settings.from_env(compose_env("api", {"API_HOST_PORT": "4010"}))
    assert moved.public_urls == ("http://127.0.0.1:4010", "http://localhost:4010")
    own = Settings.from_env(compose_env("api", {"PUBLIC_URL": "https://api.example.com"}))
    assert own.public_urls == ("https://api.example.com",)
