"""The dpop-redis component: the replay store's URL from a Secret, egress to Redis, a dev-only Redis."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from service.config import Settings
from tests.repo.test_manifests import ROOT
from tests.repo.test_manifests import api_container
from tests.repo.test_manifests import api_deployment
from tests.repo.test_manifests import compose
from tests.repo.test_manifests import compose_env
from tests.repo.test_manifests import container_env
from tests.repo.test_manifests import one
from tests.repo.test_manifests import rendered

COMPONENT = ROOT / "deploy" / "components" / "dpop-redis"


def with_component(tmp_path: Path, overlay: str) -> tuple[dict[str, Any], ...]:
    """An overlay with the component added, as its kustomization's `components:` would."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (CI's k8s stage requires it)")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "flask-auth0-api",
        # kustomize refuses absolute paths: relative ones from the temporary directory.
        "resources": [os.path.relpath(ROOT / "deploy" / "overlays" / overlay, tmp_path)],
        "components": [os.path.relpath(COMPONENT, tmp_path)],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    out = subprocess.run(
        [kubectl, "kustomize", str(tmp_path)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def replay_url_source(objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """Where the API container's AUTH0_DPOP_REPLAY_URL comes from."""
    container = api_container(api_deployment(objects))
    (item,) = [e for e in container["env"] if e["name"] == "AUTH0_DPOP_REPLAY_URL"]
    return item


def egress_ports_of_api(objects: tuple[dict[str, Any], ...]) -> set[int]:
    """TCP ports any NetworkPolicy lets the API pods reach."""
    ports: set[int] = set()
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        selected = policy["spec"]["podSelector"].get("matchLabels", {})
        if selected.get("app.kubernetes.io/component") == "api":
            for rule in policy["spec"].get("egress", []):
                ports.update(p["port"] for p in rule.get("ports", []) if isinstance(p["port"], int))
    return ports


def test_the_url_comes_from_a_secret_and_never_from_a_config_map(tmp_path: Path) -> None:
    for objects in (rendered("dev"), with_component(tmp_path, "prod")):
        source = replay_url_source(objects)
        assert "value" not in source
        assert source["valueFrom"]["secretKeyRef"]["key"] == "url"
        for config_map in (o for o in objects if o["kind"] == "ConfigMap"):
            assert "AUTH0_DPOP_REPLAY_URL" not in config_map.get("data", {})
        assert {6379, 6380} <= egress_ports_of_api(objects)


def test_prod_leaves_the_shared_store_to_the_operator() -> None:
    """prod names the component but does not include it: its Secret must exist first."""
    objects = rendered("prod")
    container = api_container(api_deployment(objects))
    assert "AUTH0_DPOP_REPLAY_URL" not in {e["name"] for e in container["env"]}
    assert 6379 not in egress_ports_of_api(objects)
    prod = ROOT / "deploy" / "overlays" / "prod" / "kustomization.yaml"
    assert "components/dpop-redis" in prod.read_text()


def test_dev_reaches_its_own_redis_and_only_the_api_may() -> None:
    objects = rendered("dev")
    env = container_env(objects, api_container(api_deployment(objects)))
    settings = Settings.from_env(env)
    assert settings.dpop.replay_store is not None and not settings.dpop.replay_store.fail_open
    url = urlsplit(env["AUTH0_DPOP_REPLAY_URL"])
    service = one(objects, "Service", url.hostname)
    assert [p["port"] for p in service["spec"]["ports"]] == [url.port]
    redis = one(objects, "Deployment", url.hostname)
    pod_labels = redis["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("redis:")
    assert "--save" in container["args"] and "noeviction" in container["args"]
    policy = one(objects, "NetworkPolicy", "redis")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    (ingress,) = policy["spec"]["ingress"]
    sources = [f["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for f in ingress["from"]]
    assert sources == ["api"]
    assert policy["spec"]["egress"] == []


def test_compose_runs_the_api_against_its_redis_service() -> None:
    settings = Settings.from_env(compose_env("api", {}))
    assert settings.dpop.replay_store is not None
    assert urlsplit(settings.dpop.replay_store.url).hostname == "redis"
    redis = compose()["services"]["redis"]
    assert redis["image"] == "redis:7"
    assert "ports" not in redis  # reached by the api on the compose network only
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "noeviction" in redis["command"] and "--save" in redis["command"]
    assert compose()["services"]["api"]["depends_on"]["redis"]["condition"] == "service_healthy"
