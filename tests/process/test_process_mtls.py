"""Certificate-bound tokens end to end: Debian's nginx ends TLS on loopback and forwards the client
certificate to real gunicorn with the shipped configs: own routes behind
deploy/mtls/default.conf.template, and gateway mode (/auth/check) behind
deploy/gateway/nginx/default.conf.template in front of the sample echo upstream.

Every certificate is made here at run time with cryptography; nginx asks for one with
``ssl_verify_client optional_no_ca`` and overwrites ``X-Client-Cert`` on every request.
"""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import certs
from tests.support.issuer import LocalIssuer
from tests.support.nginx import Nginx
from tests.support.nginx import render_template
from tests.support.procs import Server
from tests.support.procs import ServerFactory
from tests.support.procs import metric_sum
from tests.support.procs import run_to_exit
from tests.support.procs import service_env
from tests.support.upstream import EchoUpstream

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "mtls" / "default.conf.template"
GATEWAY_TEMPLATE = REPO / "deploy" / "gateway" / "nginx" / "default.conf.template"
MFA = "urn:example:mfa"
POLICY = f"""
rules:
  - name: refunds
    path: /api/refunds/<int:id>
    acr_values: [{MFA}]
    max_age: 300
  - name: anything
    path: /api/<path:rest>
"""


@dataclass
class Pki:
    """The run's CA, nginx's server certificate and three client certificates (files in `dir`)."""

    dir: Path
    ca: certs.Issued
    mine: certs.Issued
    theirs: certs.Issued
    #: Signed by nobody: RFC 8705 §2.2 self-signed certificate binding.
    self_signed: certs.Issued

    def files(self, name: str) -> tuple[str, str]:
        return str(self.dir / f"{name}.pem"), str(self.dir / f"{name}.key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = certs.make_ca()
    issued = {
        "server": certs.issue(ca, "127.0.0.1", server=True),
        "mine": certs.issue(ca, "client"),
        "theirs": certs.issue(ca, "someone else"),
        "self_signed": certs.make_ca("self-signed client"),
    }
    for name, cert in issued.items():
        cert.write(directory, name)
    ca.write(directory, "ca")
    return Pki(directory, ca, issued["mine"], issued["theirs"], issued["self_signed"])


@dataclass
class Front:
    """nginx's TLS port in front of one gunicorn service."""

    port: int
    server: Server


@pytest.fixture(scope="module")
def fronts(
    module_issuer: LocalIssuer, module_gunicorn: ServerFactory, pki: Pki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Front]]:
    """One nginx with a TLS listener per AUTH0_MTLS mode, each in front of its own gunicorn."""
    services = {
        mode: module_gunicorn(module_issuer, workers=1, env={"AUTH0_MTLS": mode})
        for mode in ("allowed", "required")
    }
    with Nginx(tmp_path_factory.mktemp("nginx")) as nginx:
        ports = {"allowed": nginx.port, "required": nginx.extra_port()}
        cert, key = pki.files("server")
        blocks = [
            render_template(
                TEMPLATE.read_text(),
                {"LISTEN": f"127.0.0.1:{ports[mode]}", "SERVER_CERT": cert, "SERVER_KEY": key,
                 "API": services[mode].base_url},
            )
            for mode in services
        ]
        nginx.start("\n".join(blocks))
        yield {mode: Front(ports[mode], services[mode]) for mode in services}


def https_get(
    pki: Pki, port: int, token: str | None, client: str | None, headers: dict[str, str] | None = None,
    path: str = "/api/private",
) -> tuple[int, str]:
    """GET `path` over TLS (verifying nginx against the run's CA) with an optional client cert."""
    context = ssl.create_default_context(cafile=str(pki.dir / "ca.pem"))
    if client is not None:
        context.load_cert_chain(*pki.files(client))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=15)
    try:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        conn.request("GET", path, headers=sent)
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("WWW-Authenticate") or ""
    finally:
        conn.close()


def bound(issuer: LocalIssuer, cert: certs.Issued) -> str:
    return issuer.mint({"cnf": {"x5t#S256": cert.thumbprint}})


def last_reason(server: Server) -> str:
    """The reason of the service's latest auth_decision line."""
    lines = server.wait_for_record(lambda r: r.get("event") == "auth_decision")
    return str(lines[-1]["reason"])


@pytest.mark.parametrize("mode", ["allowed", "required"])
def test_a_bound_token_passes_with_its_certificate_only(fronts, pki, module_issuer, mode) -> None:
    front = fronts[mode]
    token = bound(module_issuer, pki.mine)
    assert https_get(pki, front.port, token, "mine")[0] == 200
    status, challenge = https_get(pki, front.port, token, "theirs")
    assert status == 401 and 'error="invalid_token"' in challenge
    assert last_reason(front.server) == "mtls_mismatch"
    status, challenge = https_get(pki, front.port, token, None)
    assert status == 401 and 'error="invalid_token"' in challenge
    assert last_reason(front.server) == "mtls_missing"
    samples = front.server.metrics()
    for reason in ("mtls_mismatch", "mtls_missing"):
        assert metric_sum(samples, "auth_decisions_total", outcome="deny", reason=reason) >= 1


def test_a_self_signed_client_certificate_binds_too(fronts, pki, module_issuer) -> None:
    token = bound(module_issuer, pki.self_signed)
    assert https_get(pki, fronts["allowed"].port, token, "self_signed")[0] == 200
    assert https_get(pki, fronts["allowed"].port, token, "mine")[0] == 401


@pytest.mark.parametrize(("mode", "status"), [("allowed", 200), ("required", 401)])
def test_an_unbound_token_passes_in_allowed_mode_only(fronts, pki, module_issuer, mode, status) -> None:
    front = fronts[mode]
    for client in (None, "mine"):
        answer, challenge = https_get(pki, front.port, module_issuer.mint(), client)
        assert answer == status
    if status == 401:
        assert challenge.startswith('Bearer realm="api", error="invalid_token"')
        assert last_reason(front.server) == "mtls_required"


def test_a_client_sent_certificate_header_never_reaches_the_service(fronts, pki, module_issuer) -> None:
    """nginx overwrites X-Client-Cert: a stolen bound token plus its (public) certificate in the
    header is refused without the certificate's private key on the TLS connection."""
    front = fronts["allowed"]
    token = bound(module_issuer, pki.mine)
    forged = {"X-Client-Cert": certs.nginx_escaped(pki.mine)}
    assert https_get(pki, front.port, token, None, forged)[0] == 401
    assert last_reason(front.server) == "mtls_missing"
    assert https_get(pki, front.port, token, "theirs", forged)[0] == 401
    assert last_reason(front.server) == "mtls_mismatch"
    # Sent straight to the service (around the proxy) the forged header would pass: the reason
    # the proxy must overwrite it, and the service must not be reachable around it.
    assert front.server.get("/api/private", token=token, headers=forged).status == 200
    # Neither the certificate nor the token is ever logged.
    body = pki.mine.pem.splitlines()[1]
    output = front.server.stdout() + front.server.stderr()
    assert body not in output and certs.nginx_escaped(pki.mine)[:80] not in output and token not in output


@pytest.fixture(scope="module")
def gateways(
    module_issuer: LocalIssuer, module_gunicorn: ServerFactory, pki: Pki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Front]]:
    """Gateway mode: per AUTH0_MTLS mode, the shipped gateway template on a TLS listener that asks
    for a client certificate, deciding through its own gunicorn's /auth/check, in front of echo."""
    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text(POLICY)
    cert, key = pki.files("server")
    # The TLS settings at http{} level (servers inherit them); the shipped server block is as is.
    tls = f"ssl_certificate {cert};\nssl_certificate_key {key};\nssl_verify_client optional_no_ca;\n"
    with ExitStack() as stack:
        upstream = stack.enter_context(EchoUpstream(tmp_path_factory.mktemp("echo"))).start()
        fronts = {}
        for mode in ("allowed", "required"):
            service = module_gunicorn(
                module_issuer, workers=1, env={"AUTH0_MTLS": mode, "GATEWAY_POLICY": str(policy)}
            )
            nginx = stack.enter_context(Nginx(tmp_path_factory.mktemp(f"gateway-{mode}")))
            nginx.start(tls + render_template(
                GATEWAY_TEMPLATE.read_text(),
                {"GATEWAY_PORT": f"127.0.0.1:{nginx.port} ssl", "AUTH_SERVICE": service.base_url,
                 "UPSTREAM": f"http://127.0.0.1:{upstream.port}"},
            ))
            fronts[mode] = Front(nginx.port, service)
        yield fronts


@pytest.mark.parametrize("mode", ["allowed", "required"])
def test_gateway_mode_a_bound_token_passes_with_its_certificate_only(
    gateways, pki, module_issuer, mode
) -> None:
    front = gateways[mode]
    token = bound(module_issuer, pki.mine)
    assert https_get(pki, front.port, token, "mine", path="/api/orders")[0] == 200
    assert https_get(pki, front.port, token, "theirs", path="/api/orders")[0] == 401
    assert last_reason(front.server) == "mtls_mismatch"
    forged = {"X-Client-Cert": certs.nginx_escaped(pki.mine)}
    status, challenge = https_get(pki, front.port, token, None, forged, path="/api/orders")
    assert status == 401 and challenge.startswith('Bearer realm="api", error="invalid_token"')
    assert last_reason(front.server) == "mtls_missing"


@pytest.mark.parametrize(("mode", "status"), [("allowed", 200), ("required", 401)])
def test_gateway_mode_an_unbound_token_passes_in_allowed_mode_only(
    gateways, pki, module_issuer, mode, status
) -> None:
    front = gateways[mode]
    assert https_get(pki, front.port, module_issuer.mint(), "mine", path="/api/orders")[0] == status
    if status == 401:
        assert last_reason(front.server) == "mtls_required"


def test_gateway_mode_step_up_rule_challenges_through_nginx(gateways, pki, module_issuer) -> None:
    front = gateways["allowed"]
    now = int(time.time())
    weak = module_issuer.mint({"acr": "urn:example:pwd", "auth_time": now})
    status, challenge = https_get(pki, front.port, weak, None, path="/api/refunds/7")
    assert status == 401
    assert 'error="insufficient_user_authentication"' in challenge
    assert f'acr_values="{MFA}"' in challenge and "max_age" not in challenge
    assert last_reason(front.server) == "step_up"
    strong = module_issuer.mint({"acr": MFA, "auth_time": now})
    assert https_get(pki, front.port, strong, None, path="/api/refunds/7")[0] == 200


@pytest.mark.parametrize(
    ("name", "value"),
    [("AUTH0_MTLS", "maybe"), ("AUTH0_MAX_TOKEN_AGE", "-1"), ("AUTH0_MAX_TOKEN_AGE", "soon")],
)
def test_invalid_values_exit_78_naming_the_variable(
    module_issuer: LocalIssuer, tmp_path: Path, name: str, value: str
) -> None:
    env = service_env(module_issuer, tmp_path / "prom", {name: value})
    code, out, err = run_to_exit(env, log_dir=tmp_path / "logs", timeout=30)
    assert code == 78
    assert "Traceback" not in out + err
    naming = [line for line in (out + err).splitlines() if name in line]
    assert len(naming) == 1 and naming[0].startswith(f"configuration error: {name}: "), out + err
