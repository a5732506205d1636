"""Gateway mode in real gunicorn: a bad policy stops the start, SIGHUP reloads it, one line per decision."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support.helpers import eventually
from tests.support.issuer import LocalIssuer
from tests.support.procs import Server
from tests.support.procs import ServerFactory
from tests.support.procs import run_to_exit
from tests.support.procs import service_env

pytestmark = pytest.mark.slow

GOOD = "rules:\n  - name: orders\n    path: /api/orders/<int:id>\n    scopes: read:orders\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "GATEWAY_POLICY: cannot read"),
        ("rules: [{name: orders, path: /x", "GATEWAY_POLICY: not valid YAML"),
        (
            "rules: [{name: orders, path: '/x/<uuidv9:id>'}]",
            "GATEWAY_POLICY: rule 'orders': bad path pattern",
        ),
        ("rules: [{name: orders, path: /x, scope: a}]", "GATEWAY_POLICY: rule 'orders': unknown key 'scope'"),
        ("rules: [{name: a, path: /x}, {name: a, path: /y}]", "GATEWAY_POLICY: rule 'a': duplicate name"),
        ("rules: [{name: orders, path: /x, scopes: 'a\\\\b'}]", "GATEWAY_POLICY: rule 'orders': scope"),
        ("rules: [{name: orders, path: /x, dpop: sometimes}]", "GATEWAY_POLICY: rule 'orders': 'dpop'"),
    ],
    ids=["missing", "yaml", "converter", "unknown_key", "duplicate", "scope", "dpop"],
)
def test_a_bad_policy_stops_the_start_with_one_line_naming_the_rule(
    module_issuer: LocalIssuer, tmp_path: Path, content: str | None, expected: str
) -> None:
    policy = tmp_path / "policy.yaml"
    if content is not None:
        policy.write_text(content)
    env = service_env(module_issuer, tmp_path / "prom", {"GATEWAY_POLICY": str(policy)})
    code, out, err = run_to_exit(env, log_dir=tmp_path / "logs", timeout=30)
    output = out + err
    assert code == 78, output[-3000:]
    assert "Traceback" not in output
    naming = [line for line in output.splitlines() if "GATEWAY_POLICY" in line]
    assert len(naming) == 1, output[-3000:]
    assert naming[0].startswith(f"configuration error: {expected}"), naming[0]


def _ask(server: Server, path: str, token: str) -> int:
    headers = {"X-Original-URL": f"http://gw.example{path}", "X-Original-Method": "GET"}
    return server.get("/auth/check", headers=headers, token=token).status


def _ask_during_reload(server: Server, path: str, token: str) -> int:
    """As _ask; a connection an old worker drops while the workers change over counts as no answer."""
    try:
        return _ask(server, path, token)
    except OSError:
        return 0


def test_sighup_reloads_the_policy_and_a_broken_file_keeps_the_previous_one(
    module_issuer: LocalIssuer, gunicorn: ServerFactory, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(GOOD)
    server = gunicorn(module_issuer, env={"GATEWAY_POLICY": str(policy)})
    token = module_issuer.mint(scope="read:orders")
    assert _ask(server, "/api/orders/1", token) == 200
    assert _ask(server, "/api/invoices/1", token) == 403

    policy.write_text(GOOD.replace("/api/orders/", "/api/invoices/"))
    for _ in range(6):  # no effect before SIGHUP, whichever worker answers
        assert _ask(server, "/api/invoices/1", token) == 403
    server.signal(signal.SIGHUP)
    assert eventually(lambda: _ask_during_reload(server, "/api/invoices/1", token) == 200, timeout=30)
    assert eventually(
        lambda: all(_ask_during_reload(server, "/api/orders/1", token) == 403 for _ in range(6)), timeout=30
    )

    policy.write_text("rules: [{name: broken, path: '/x/<nope:y>'}]")
    server.signal(signal.SIGHUP)
    assert server.wait_for_record(lambda r: "gateway_policy_invalid" in str(r.get("event")), timeout=15)
    server.wait_workers(2)
    assert eventually(lambda: _ask_during_reload(server, "/api/invoices/1", token) == 200, timeout=30)
    for _ in range(6):
        assert _ask(server, "/api/invoices/1", token) == 200
    assert server.alive()


def test_one_decision_one_line_and_count_under_the_rule_name(
    module_issuer: LocalIssuer, gunicorn: ServerFactory, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(GOOD)
    server = gunicorn(module_issuer, workers=1, env={"GATEWAY_POLICY": str(policy)})
    token = module_issuer.mint(scope="read:orders")
    headers = {"X-Original-URL": "http://gw.example/api/orders/7?secret=1", "X-Original-Method": "PUT"}
    assert server.get("/auth/check", headers=headers, token=token).status == 200
    assert _ask(server, "/nowhere", token) == 403
    decisions = server.wait_for_record(lambda r: r.get("event") == "auth_decision", count=2)
    assert [(d["route"], d["outcome"], d["reason"]) for d in decisions] == [
        ("orders", "allow", "ok"),
        ("unmatched", "deny", "no_rule"),
    ]
    access = server.wait_for_record(lambda r: r.get("event") == "http_request" and "original_method" in r)
    assert access[0]["path"] == "/auth/check"
    assert (access[0]["original_method"], access[0]["original_path"]) == ("PUT", "/api/orders/7")
    assert "secret" not in server.output()
    samples = server.metrics()
    counted = {
        (labels["route"], labels["reason"]): value
        for name, labels, value in samples
        if name == "auth_decisions_total" and value
    }
    assert counted == {("orders", "ok"): 1.0, ("unmatched", "no_rule"): 1.0}
    assert any(
        name == "auth_decision_duration_seconds_count" and labels["route"] == "orders" and value == 1
        for name, labels, value in samples
    )
