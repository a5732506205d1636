"""The gateway policy file: typed rules, start-up faults named by rule, Werkzeug's most-specific match."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError
from service.gateway_policy import PolicyError
from service.gateway_policy import load_policy
from service.gateway_policy import parse_policy
from service.gateway_policy import policy_for
from tests.support.appkit import settings_for
from tests.support.issuer import LocalIssuer

POLICY = """
rules:
  - name: catch-all
    path: /api/<path:rest>
  - name: orders-read
    path: /api/orders/<int:id>
    methods: [GET, HEAD]
    scopes: "read:orders"
  - name: orders-any
    path: /api/orders/<id>
  - name: example-host
    path: /api/orders/<int:id>
    host: API.example.com
    scopes: ["admin", "read:orders write:orders"]
    claims: {org_id: org_123, tier: 2}
    optional: true
    dpop: required
"""


def test_rules_are_typed_and_frozen() -> None:
    rule = parse_policy(POLICY).rules[3]
    assert rule.host == "api.example.com"
    assert rule.scopes == ("admin", "read:orders write:orders")
    assert rule.claims == (("org_id", "org_123"), ("tier", 2))
    assert (rule.optional, rule.dpop, rule.methods) == (True, "required", None)
    with pytest.raises(AttributeError):
        rule.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("host", "path", "method", "expected"),
    [
        ("gw.local", "/api/orders/42", "GET", "orders-read"),  # int converter beats default
        ("gw.local", "/api/orders/abc", "GET", "orders-any"),
        ("gw.local", "/api/orders/42", "POST", "orders-any"),  # method mismatch: next most specific
        ("gw.local", "/api/orders/42/items", "GET", "catch-all"),
        ("api.example.com", "/api/orders/42", "GET", "example-host"),  # the exact host first
        ("gw.local", "/elsewhere", "GET", None),
        ("gw.local", "/api", "GET", None),
    ],
)
def test_the_most_specific_rule_wins_whatever_the_order(
    host: str, path: str, method: str, expected: str | None
) -> None:
    rule = parse_policy(POLICY).match(host, path, method)
    assert (rule.name if rule else None) == expected


def test_no_rule_for_the_method_is_no_match() -> None:
    policy = parse_policy("rules: [{name: r, path: /x, methods: [GET]}]")
    assert policy.match("h", "/x", "DELETE") is None
    assert policy.match("h", "/x", "GET") is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [{name: a, path: /x, scope: r}]", "rule 'a': unknown key 'scope'"),
        ("rules: [{name: a, path: /x}, {name: a, path: /y}]", "rule 'a': duplicate name"),
        ("rules: [{name: a, path: '/x/<nope:y>'}]", "rule 'a': bad path pattern"),
        ("rules: [{name: a, path: x}]", "rule 'a': 'path' is required"),
        ("rules: [{name: a, path: /x, scopes: 'read\\\\x'}]", "rule 'a': scope"),
        ("rules: [{name: a, path: /x, scopes: 'a\"b'}]", "RFC 6749 scope tokens"),
        ("rules: [{name: a, path: /x, dpop: maybe}]", "rule 'a': 'dpop' must be one of"),
        ("rules: [{name: a, path: /x, methods: [FROB]}]", "rule 'a': unknown method"),
        ("rules: [{name: a, path: /x, host: 'h:80'}]", "rule 'a': 'host'"),
        ("rules: [{name: a, path: /x, optional: 'yes'}]", "rule 'a': 'optional'"),
        ("rules: [{name: a, path: /x, claims: []}]", "rule 'a': 'claims'"),
        ("rules: [{path: /x}]", "rule #1: 'name' is required"),
        ("rules: [{name: unmatched, path: /x}]", "'unmatched'"),
        ("rules: {name: a}", "'rules' must be a list"),
        ("other: 1", "one key, 'rules'"),
        ("rules: [{name: a", "not valid YAML (line 1"),
    ],
)
def test_a_bad_policy_names_the_rule_and_the_fault(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=None) as caught:
        parse_policy(text)
    assert message in str(caught.value)


def test_dpop_rules_need_dpop_enabled() -> None:
    with pytest.raises(PolicyError, match="rule 'a': 'dpop: required' needs AUTH0_DPOP"):
        parse_policy("rules: [{name: a, path: /x, dpop: required}]", default_dpop="disabled")
    assert parse_policy("rules: [{name: a, path: /x, dpop: disabled}]", default_dpop="disabled")


def test_a_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(str(tmp_path / "absent.yaml"))


def test_settings_turn_a_bad_policy_into_a_config_error(module_issuer: LocalIssuer, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules: [{name: orders, path: '/x/<nope:id>'}]")
    settings = settings_for(module_issuer, GATEWAY_POLICY=str(path))
    with pytest.raises(ConfigError, match="^GATEWAY_POLICY: rule 'orders': bad path pattern"):
        policy_for(settings)
    assert policy_for(settings_for(module_issuer)) is None


@pytest.mark.parametrize(
    "value",
    ["org_id", "org_id:", ":X-Org", "org_id:X Org", "sub:X-Auth-Subject", "a:X-A,b:x-a"],
)
def test_claim_headers_setting_refuses_bad_pairs(
    module_issuer: LocalIssuer, tmp_path: Path, value: str
) -> None:
    with pytest.raises(ConfigError, match="^GATEWAY_CLAIM_HEADERS: "):
        settings_for(module_issuer, GATEWAY_POLICY=str(tmp_path / "p.yaml"), GATEWAY_CLAIM_HEADERS=value)
