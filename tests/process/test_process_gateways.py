"""Gateway mode behind real gateways: Debian's nginx (auth_request) and Caddy (forward_auth).

Each runs the shipped config (deploy/gateway/) on loopback in front of the sample echo upstream,
asking a real gunicorn serving /auth/check with a policy file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from joserfc.jwk import ECKey

from dev_issuer.client import make_proof
from tests.support import certs
from tests.support.caddy import Caddy
from tests.support.gateway_process import GatewayProcess
from tests.support.issuer import LocalIssuer
from tests.support.nginx import Nginx
from tests.support.nginx import render_template
from tests.support.procs import Response
from tests.support.procs import Server
from tests.support.procs import ServerFactory
from tests.support.procs import http_get
from tests.support.upstream import EchoUpstream
from tests.support.upstream import echoed_headers

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NGINX_TEMPLATE = ROOT / "deploy" / "gateway" / "nginx" / "default.conf.template"
CADDYFILE = ROOT / "deploy" / "gateway" / "Caddyfile"
KEY = ECKey.generate_key("P-256", private=True)

POLICY = """
rules:
  - name: messages
    path: /api/messages
    methods: [GET, POST]
    scopes: "read:messages"
  - name: admin
    path: /api/admin
    scopes: "admin:all"
  - name: catalog
    path: /api/catalog/<path:rest>
    optional: true
  - name: anything
    path: /api/<path:rest>
  - name: reports
    path: /reports
    methods: [GET]
"""
IDENTITY = ("x-auth-subject", "x-auth-client", "x-auth-scopes", "x-auth-issuer", "x-auth-org")


def start_gateway(kind: str, workdir: Path, auth_port: int, upstream_port: int) -> GatewayProcess:
    """The shipped nginx template or Caddyfile, pointed at the service and the upstream."""
    if kind == "nginx":
        nginx = Nginx(workdir / "nginx")
        template = NGINX_TEMPLATE.read_text()
        return nginx.start(
            render_template(
                template,
                {
                    "GATEWAY_PORT": f"127.0.0.1:{nginx.port}",
                    "AUTH_SERVICE": f"http://127.0.0.1:{auth_port}",
                    "UPSTREAM": f"http://127.0.0.1:{upstream_port}",
                },
            )
        )
    caddy = Caddy(workdir / "caddy")
    return caddy.start(
        CADDYFILE.read_text(),
        env={
            "GATEWAY_ADDRESS": f":{caddy.port}",
            "AUTH_SERVICE": f"127.0.0.1:{auth_port}",
            "UPSTREAM": f"127.0.0.1:{upstream_port}",
        },
    )


@pytest.fixture(scope="module")
def service(
    module_issuer: LocalIssuer, module_gunicorn: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Server:
    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text(POLICY)
    return module_gunicorn(
        module_issuer,
        env={
            "GATEWAY_POLICY": str(policy),
            "GATEWAY_CLAIM_HEADERS": "org_id:X-Auth-Org",
        },
    )


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoUpstream]:
    with EchoUpstream(tmp_path_factory.mktemp("echo")) as echo:
        yield echo.start()


@pytest.fixture(scope="module", params=["nginx", "caddy"])
def gateway(
    request: pytest.FixtureRequest,
    service: Server,
    upstream: EchoUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    gw = start_gateway(request.param, tmp_path_factory.mktemp(request.param), service.port, upstream.port)
    with gw:
        yield gw


def through(gateway: GatewayProcess, path: str, **kwargs: object) -> Response:
    return http_get(gateway.port, path, **kwargs)  # type: ignore[arg-type]


def test_no_token_is_401_with_the_bearer_challenge(gateway: GatewayProcess) -> None:
    resp = through(gateway, "/api/messages")
    assert resp.status == 401
    assert (resp.header("www-authenticate") or "").startswith('Bearer realm="api"')
    assert resp.header("cache-control") == "no-store"


def test_a_token_reaches_the_upstream_with_its_identity(
    gateway: GatewayProcess, module_issuer: LocalIssuer
) -> None:
    token = module_issuer.mint(
        {"sub": "user-1", "azp": "client-1", "org_id": "org_9"}, permissions=["write:x"]
    )
    resp = through(gateway, "/api/messages?page=2", token=token)
    assert resp.status == 200, resp.body
    seen = echoed_headers(resp.body)
    assert seen["x-auth-subject"] == "user-1"
    assert seen["x-auth-client"] == "client-1"
    assert seen["x-auth-scopes"] == "read:messages write:x"
    assert seen["x-auth-issuer"] == module_issuer.url
    assert seen["x-auth-org"] == "org_9"
    assert resp.json()["path"] == "/api/messages?page=2"


def test_missing_permission_is_403_naming_the_rules_scope(
    gateway: GatewayProcess, module_issuer: LocalIssuer
) -> None:
    resp = through(gateway, "/api/admin", token=module_issuer.mint())
    assert resp.status == 403
    challenge = resp.header("www-authenticate") or ""
    assert 'error="insufficient_scope"' in challenge and 'scope="admin:all"' in challenge
    assert resp.header("cache-control") == "no-store"


def test_an_unmatched_request_is_refused(gateway: GatewayProcess, module_issuer: LocalIssuer) -> None:
    assert through(gateway, "/elsewhere", token=module_issuer.mint()).status == 403
    assert through(gateway, "/reports", token=module_issuer.mint()).status == 200
    assert through(gateway, "/reports", token=module_issuer.mint(), method="DELETE").status == 403


@pytest.mark.parametrize("with_token", [False, True], ids=["anonymous", "token"])
def test_a_client_sent_identity_header_never_reaches_the_upstream(
    gateway: GatewayProcess, module_issuer: LocalIssuer, with_token: bool
) -> None:
    forged = {name: "admin" for name in IDENTITY}
    token = module_issuer.mint({"sub": "user-2"}) if with_token else None
    resp = through(gateway, "/api/catalog/shoes", token=token, headers=forged)
    assert resp.status == 200, resp.body
    seen = echoed_headers(resp.body)
    if with_token:
        assert seen["x-auth-subject"] == "user-2"
        assert "x-auth-org" not in seen
    else:
        assert not set(IDENTITY) & set(seen), seen
    assert "admin" not in {seen.get(name) for name in IDENTITY}
    assert not any("{" in str(value) for value in seen.values()), seen


def test_a_client_sent_certificate_header_never_reaches_the_decision(
    gateway: GatewayProcess, module_issuer: LocalIssuer
) -> None:
    """A stolen certificate-bound token plus its (public) certificate in X-Client-Cert: the shipped
    configs drop the header (no TLS here, so no certificate), and the decision refuses."""
    client = certs.issue(certs.make_ca(), "client")
    token = module_issuer.mint({"cnf": {"x5t#S256": client.thumbprint}})
    forged = {"X-Client-Cert": certs.nginx_escaped(client)}
    resp = through(gateway, "/api/catalog/shoes", token=token, headers=forged)
    assert resp.status == 401, resp.body
    assert "x-client-cert" not in echoed_headers(through(gateway, "/api/catalog/x", headers=forged).body)


def test_dpop_proof_for_the_gateways_url_passes_and_for_the_services_url_fails(
    gateway: GatewayProcess, service: Server, module_issuer: LocalIssuer
) -> None:
    token = module_issuer.mint({"cnf": {"jkt": KEY.thumbprint()}})
    url = f"{gateway.url}/api/messages"
    good = make_proof(KEY, "GET", url, access_token=token)
    resp = through(gateway, "/api/messages", headers={"Authorization": f"DPoP {token}", "DPoP": good})
    assert resp.status == 200, resp.body
    assert echoed_headers(resp.body)["x-auth-subject"]
    wrong = make_proof(KEY, "GET", f"{service.base_url}/auth/check", access_token=token)
    resp = through(gateway, "/api/messages", headers={"Authorization": f"DPoP {token}", "DPoP": wrong})
    assert resp.status == 401
    wrong_method = make_proof(KEY, "POST", url, access_token=token)
    resp = through(gateway, "/api/messages", headers={"Authorization": f"DPoP {token}", "DPoP": wrong_method})
    assert resp.status == 401


def test_keys_unavailable_is_503_for_the_client(
    issuer: LocalIssuer, gunicorn: ServerFactory, upstream: EchoUpstream, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    token = issuer.mint()
    issuer.go_down()
    server = gunicorn(issuer, workers=1, env={"GATEWAY_POLICY": str(policy)})
    assert server.get("/auth/check/api/messages", token=token).status == 503
    for kind in ("nginx", "caddy"):
        with start_gateway(kind, tmp_path / kind, server.port, upstream.port) as gw:
            resp = through(gw, "/api/messages", token=token)
            assert resp.status == 503, (kind, resp.status, resp.body)
            assert resp.header("retry-after"), kind
            assert resp.json()["error"] == "temporarily_unavailable", kind


def test_the_nginx_health_location_answers_without_a_decision(
    service: Server, upstream: EchoUpstream, tmp_path: Path
) -> None:
    with start_gateway("nginx", tmp_path, service.port, upstream.port) as gw:
        before = len(service.records())
        resp = through(gw, "/.gateway/healthz")
        assert (resp.status, resp.body) == (200, b"ok\n")
        assert not [r for r in service.records()[before:] if r.get("event") == "auth_decision"]
