"""A team's own blueprint behind require_auth, under real gunicorn: answers, log lines and metrics."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from dev_issuer.client import mint_token
from tests.support.helpers import eventually
from tests.support.issuer import LocalIssuer
from tests.support.procs import Server
from tests.support.procs import ServerFactory
from tests.support.procs import http_get
from tests.support.procs import metric_sum

pytestmark = pytest.mark.slow

ORDER = "/api/orders/<int:order_id>"


@pytest.fixture(scope="module")
def server(module_issuer: LocalIssuer, module_gunicorn: ServerFactory) -> Server:
    return module_gunicorn(module_issuer, workers=2, args=("tests.support.orders_example:create_app()",))


def _decision_lines(server: Server) -> Counter[tuple[str, str, str]]:
    return Counter(
        (r["route"], r["outcome"], r["reason"]) for r in server.records() if r.get("event") == "auth_decision"
    )


def test_every_form_answers_logs_once_and_counts_under_the_url_rule(
    server: Server, module_issuer: LocalIssuer
) -> None:
    reader = module_issuer.mint(scope="read:orders")
    writer = module_issuer.mint({"org_id": "org_123"}, scope="read:orders write:orders")
    outsider = module_issuer.mint({"org_id": "org_999"}, scope="read:orders write:orders")
    cases = [
        ("GET", "/api/orders/1", reader, 200, (ORDER, "allow", "ok")),
        ("GET", "/api/orders/2", module_issuer.mint(scope="read:messages"), 403,
         (ORDER, "deny", "insufficient_scope")),
        ("POST", "/api/orders", writer, 201, ("/api/orders", "allow", "ok")),
        ("POST", "/api/orders", outsider, 401, ("/api/orders", "deny", "claim_check")),
        ("DELETE", "/api/orders/3", module_issuer.mint(scope="admin"), 200,
         ("/api/orders/<int:order_id>", "allow", "ok")),
        ("GET", "/api/orders/feed", None, 200, ("/api/orders/feed", "allow", "anonymous")),
        ("GET", "/api/orders/feed", "junk", 401, ("/api/orders/feed", "deny", "malformed")),
        ("GET", "/api/private-scoped", reader, 403, ("/api/private-scoped", "deny", "insufficient_scope")),
    ]
    before = _decision_lines(server)
    for method, path, token, status, _ in cases:
        response = http_get(server.port, path, token=token, method=method)
        assert response.status == status, (method, path, response.body)
        if status == 403:
            wanted = "read:orders" if path.startswith("/api/orders") else "read:messages"
            assert f'scope="{wanted}"' in response.header("WWW-Authenticate")
    expected = Counter(label for *_, label in cases)
    assert eventually(lambda: _decision_lines(server) - before == expected, timeout=10), (
        _decision_lines(server) - before
    )
    samples = server.metrics()
    for (route, outcome, reason), count in expected.items():
        got = metric_sum(samples, "auth_decisions_total", route=route, outcome=outcome, reason=reason)
        assert got >= count, (route, outcome, reason, got)
    routes = {labels.get("route") for name, labels, _ in samples if name == "auth_decisions_total"}
    assert not any(route and route[-1].isdigit() for route in routes), routes


def test_step_up_round_trip_with_dev_issuer_tokens(server: Server, module_issuer: LocalIssuer) -> None:
    """The guide's refund route: a weak or old login gets the RFC 9470 challenge, a fresh MFA one 200."""
    refund = "/api/orders/7/refund"

    def token(acr: str, seconds_ago: int) -> str:
        claims = {"acr": acr, "auth_time": int(time.time()) - seconds_ago}
        answer = mint_token(module_issuer.url, audience=module_issuer.audience, scope="write:orders",
                            claims=claims)
        return str(answer["access_token"])

    weak = http_get(server.port, refund, token=token("urn:example:pwd", 60), method="POST")
    assert weak.status == 401
    assert weak.header("WWW-Authenticate") == (
        'Bearer realm="api", error="insufficient_user_authentication", error_description='
        '"A stronger or more recent user authentication is required.", acr_values="urn:example:mfa", '
        'DPoP algs="ES256"'
    )
    old = http_get(server.port, refund, token=token("urn:example:mfa", 3600), method="POST")
    assert old.status == 401 and 'max_age="300"' in old.header("WWW-Authenticate")
    assert "acr_values" not in old.header("WWW-Authenticate")
    fresh = http_get(server.port, refund, token=token("urn:example:mfa", 5), method="POST")
    assert (fresh.status, fresh.json()) == (200, {"refunded": 7})
    route = "/api/orders/<int:order_id>/refund"
    assert eventually(
        lambda: _decision_lines(server)[(route, "deny", "step_up")] == 2, timeout=10
    ), _decision_lines(server)
    assert metric_sum(server.metrics(), "auth_decisions_total", route=route, reason="step_up") == 2


def test_decision_lines_name_the_subject_and_never_the_token(
    server: Server, module_issuer: LocalIssuer
) -> None:
    token = module_issuer.mint(scope="read:orders")
    assert http_get(server.port, "/api/orders/77", token=token).status == 200
    lines = server.wait_for_record(
        lambda r: r.get("event") == "auth_decision" and r.get("route") == ORDER and r.get("sub"), timeout=5
    )
    assert lines and lines[-1]["sub"] == module_issuer.claims()["sub"]
    assert token not in server.stdout() and token not in server.stderr()
