"""The shipped gateway configs (deploy/gateway/) parse, and each one sets or strips every identity header.

The nginx and Caddy configs also run for real in tests/process/test_process_gateways.py; the others
are checked here only (not run here), as docs/gateway.md says.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "deploy" / "gateway"
IDENTITY = ("X-Auth-Subject", "X-Auth-Client", "X-Auth-Scopes", "X-Auth-Issuer", "X-Auth-Org")
YAML_FILES = sorted(GATEWAY.rglob("*.yaml")) + sorted(GATEWAY.rglob("*.yml"))


def _documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(GATEWAY)))
def test_every_shipped_yaml_parses(path: Path) -> None:
    assert _documents(path)


@pytest.mark.parametrize("path", sorted((GATEWAY / "kubernetes").glob("*.yaml")), ids=lambda p: p.name)
def test_kubernetes_examples_are_objects_pointing_at_the_decision_endpoint(path: Path) -> None:
    docs = _documents(path)
    assert all({"apiVersion", "kind", "metadata", "spec"} <= set(doc) for doc in docs), path
    text = path.read_text()
    assert "/auth/check" in text or "pathPrefix: /auth/check" in text
    assert "Not run here" in text


def test_nginx_template_overwrites_every_identity_header() -> None:
    text = (GATEWAY / "nginx" / "default.conf.template").read_text()
    for name in IDENTITY:
        variable = "$upstream_http_" + name.lower().replace("-", "_")
        assert re.search(rf"auth_request_set \$(\w+) \{variable};", text), name
        assert re.search(rf"proxy_set_header {name} \$\w+;", text), name
    assert "X-Original-URL $scheme://$http_host$request_uri" in text
    assert "error_page 500" in text and "return 503" in text


def test_caddyfile_strips_before_and_drops_placeholders_after_forward_auth() -> None:
    text = (GATEWAY / "Caddyfile").read_text()
    strip_at = text.index("request_header -X-Auth-Subject")
    auth_at = text.index("forward_auth {$AUTH_SERVICE}")
    for name in IDENTITY:
        assert text.index(f"request_header -{name}") < auth_at, name
        assert re.search(rf"request_header @\w+ -{name}", text[auth_at:]), name
        assert re.search(rf"header_regexp {name} ", text), name
    copy = re.search(r"^\s+copy_headers (.*)", text, re.M)
    assert copy is not None and copy.group(1).split() == list(IDENTITY)
    assert strip_at > text.index("route {")


def test_traefik_replaces_every_identity_header_and_ignores_client_forwarded_headers() -> None:
    (doc,) = _documents(GATEWAY / "traefik.yml")
    forward = doc["http"]["middlewares"]["auth0-gateway"]["forwardAuth"]
    assert forward["address"].endswith("/auth/check")
    assert forward["trustForwardHeader"] is False
    assert forward["authResponseHeaders"] == list(IDENTITY)


def test_envoy_removes_client_identity_headers_before_ext_authz() -> None:
    (doc,) = _documents(GATEWAY / "envoy.yaml")
    manager = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    filters = [f["name"] for f in manager["http_filters"]]
    assert filters == [
        "envoy.filters.http.header_mutation", "envoy.filters.http.ext_authz", "envoy.filters.http.router",
    ]
    mutations = manager["http_filters"][0]["typed_config"]["mutations"]["request_mutations"]
    assert [m["remove"] for m in mutations] == [n.lower() for n in IDENTITY]
    authz = manager["http_filters"][1]["typed_config"]
    assert authz["http_service"]["path_prefix"] == "/auth/check"
    assert authz["failure_mode_allow"] is False
    upstream = authz["http_service"]["authorization_response"]["allowed_upstream_headers"]["patterns"]
    assert [p["exact"] for p in upstream] == [n.lower() for n in IDENTITY]


def test_ingress_nginx_example_says_it_is_retiring() -> None:
    text = (GATEWAY / "kubernetes" / "ingress-nginx.yaml").read_text()
    assert "retired" in text and "Gateway API" in text
