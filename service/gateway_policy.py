"""Gateway policy: the YAML rules file parsed into typed, frozen rules and matched per request.

Matching is Werkzeug's URL map (the same rules and converters as Flask routes), so the most
specific rule wins whatever the file's order: the host first, then the path, static parts before
converters. Parsed by the gunicorn master at start (a bad file stops it) and by each worker.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map
from werkzeug.routing import RoutingException
from werkzeug.routing import Rule as UrlRule

from .config import ConfigError
from .config import Settings
from .jose.claims import is_scope_list
from .jose.step_up import StepUp

#: RFC 9110 §9 methods plus PATCH (RFC 5789): the methods a rule may name and a gateway may ask about.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
DPOP_MODES = ("required", "allowed", "disabled")
#: The route label of a request no rule matched: no rule may take it.
UNMATCHED = "unmatched"
#: A policy is a few KiB; the bound keeps a wrong path (a log file) from being loaded whole.
MAX_POLICY_BYTES = 1 << 20
MAX_RULES = 1000

_KEYS = frozenset(
    {"name", "path", "methods", "host", "scopes", "claims", "optional", "dpop", "acr_values", "max_age"}
)
#: A rule name is a log field and a metric label: printable, short.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
#: RFC 3986 reg-name or IPv4 (lower case, no port), or a bracketed IPv6 literal.
_HOST = re.compile(r"[a-z0-9._~-]+|\[[0-9a-f:.]+\]")
#: Distinct request hosts with a bound URL adapter (client-chosen: keep it bounded).
_ADAPTERS = 256
#: Remembered (host, path, method) matches: the policy never changes, and a gateway sees the same
#: few paths again and again. Longer paths are matched every time (bounds the memory).
_MATCHES = 4096
_MAX_CACHED_PATH = 256


class PolicyError(ValueError):
    """The policy file is unusable; the message names the rule and the fault."""


_Fault = Callable[[str], PolicyError]


@dataclass(frozen=True, slots=True)
class Rule:
    """One policy rule, validated."""

    name: str
    path: str
    methods: frozenset[str] | None = None
    host: str | None = None
    #: Authlib's form: alternatives, each space-delimited all-of; None = any valid token.
    scopes: tuple[str, ...] | None = None
    #: Claim name -> exact JSON value, as (name, value) pairs.
    claims: tuple[tuple[str, Any], ...] = ()
    optional: bool = False
    #: required | allowed | disabled; None = AUTH0_DPOP.
    dpop: str | None = None
    #: RFC 9470 step-up: ``acr_values`` / ``max_age`` as require_auth takes them; None = none.
    step_up: StepUp | None = None


class Policy:
    """The rules of one policy file and the URL map that matches requests to them."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        """Compile the rules into one host-matching Werkzeug map."""
        self.rules = rules
        self._map = Map(
            [_url_rule(index, rule) for index, rule in enumerate(rules)],
            host_matching=True,
            strict_slashes=False,
            merge_slashes=False,
            redirect_defaults=False,
        )
        self._bind = lru_cache(maxsize=_ADAPTERS)(self._map.bind)
        self._cached_match = lru_cache(maxsize=_MATCHES)(self._match)

    def match(self, host: str, path: str, method: str) -> Rule | None:
        """The most specific rule for a request (host lower-case without port, path decoded)."""
        if len(path) <= _MAX_CACHED_PATH and len(host) <= _MAX_CACHED_PATH:
            return self._cached_match(host, path, method)
        return self._match(host, path, method)

    def _match(self, host: str, path: str, method: str) -> Rule | None:
        """Werkzeug's match, None when nothing matches."""
        try:
            index, _ = self._bind(host).match(path, method)
        except (HTTPException, RoutingException):  # not found, method not allowed, redirect
            return None
        return self.rules[index]


def _url_rule(index: int, rule: Rule) -> UrlRule:
    """The Werkzeug rule for a policy rule; any host when the rule names none."""
    return UrlRule(
        rule.path,
        endpoint=index,
        methods=sorted(rule.methods) if rule.methods is not None else None,
        host=rule.host if rule.host is not None else "<_any_host>",
    )


#: Policy files the gunicorn master read and accepted, by path: workers forked after that use
#: this text, so a file broken before a SIGHUP leaves the previous policy in force.
_ACCEPTED: dict[str, bytes] = {}


def read_policy_file(path: str) -> bytes:
    """The file's bytes, bounded; PolicyError when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_POLICY_BYTES + 1)
    except OSError as error:
        raise PolicyError(f"cannot read {path}: {error.strerror or error}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"{path} is larger than {MAX_POLICY_BYTES} bytes")
    return raw


def accept_policy(path: str, *, default_dpop: str) -> Policy:
    """Read and parse the file now (the master, at start and on SIGHUP) and keep its text for
    the workers it forks next; on PolicyError the previously accepted text stays."""
    raw = read_policy_file(path)
    policy = parse_policy(raw, default_dpop=default_dpop)
    _ACCEPTED[path] = raw
    return policy


def load_policy(path: str, *, default_dpop: str = "allowed") -> Policy:
    """The policy for a worker: the text the master accepted, else the file as it is now."""
    raw = _ACCEPTED.get(path)
    return parse_policy(raw if raw is not None else read_policy_file(path), default_dpop=default_dpop)


def parse_policy(text: str | bytes, *, default_dpop: str = "allowed") -> Policy:
    """Parse policy YAML into a Policy; PolicyError names the rule and the fault."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise PolicyError(f"not valid YAML{where}") from None
    if not isinstance(document, Mapping) or set(document) != {"rules"}:
        raise PolicyError("the file must be a mapping with one key, 'rules'")
    entries = document["rules"]
    if not isinstance(entries, list):
        raise PolicyError("'rules' must be a list")
    if len(entries) > MAX_RULES:
        raise PolicyError(f"more than {MAX_RULES} rules")
    rules: list[Rule] = []
    names: set[str] = set()
    for number, entry in enumerate(entries, 1):
        rule = _parse_rule(number, entry, default_dpop)
        if rule.name in names:
            raise PolicyError(f"rule '{rule.name}': duplicate name")
        names.add(rule.name)
        rules.append(rule)
    try:
        return Policy(tuple(rules))
    except (LookupError, ValueError) as error:
        # Werkzeug compiles the whole map at once: find the rule it refused.
        for rule in rules:
            _check_pattern(rule)
        raise PolicyError(f"the rules do not compile: {error}") from None


def _parse_rule(number: int, entry: Any, default_dpop: str) -> Rule:
    """Validate one entry of 'rules'."""
    if not isinstance(entry, Mapping):
        raise PolicyError(f"rule #{number}: must be a mapping")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == UNMATCHED:
        label = f"'{name}'" if isinstance(name, str) and name else f"#{number}"
        raise PolicyError(
            f"rule {label}: 'name' is required: 1-128 of A-Z a-z 0-9 . _ : / - (not '{UNMATCHED}')"
        )

    def fault(message: str) -> PolicyError:
        return PolicyError(f"rule '{name}': {message}")

    unknown = sorted(str(key) for key in entry if key not in _KEYS)
    if unknown:
        raise fault(f"unknown key '{unknown[0]}'")
    path = entry.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise fault("'path' is required and must start with '/'")
    rule = Rule(
        name=name,
        path=path,
        methods=_methods(entry.get("methods"), fault),
        host=_host(entry.get("host"), fault),
        scopes=_scopes(entry.get("scopes"), fault),
        claims=_claims(entry.get("claims"), fault),
        optional=_flag(entry.get("optional", False), "optional", fault),
        dpop=_dpop(entry.get("dpop"), default_dpop, fault),
        step_up=_step_up(entry.get("acr_values"), entry.get("max_age"), fault),
    )
    _check_pattern(rule)
    return rule


def _check_pattern(rule: Rule) -> None:
    """Compile the rule's path alone, naming the rule when Werkzeug refuses it."""
    try:
        Map([_url_rule(0, rule)], host_matching=True)
    except (LookupError, ValueError) as error:
        raise PolicyError(f"rule '{rule.name}': bad path pattern {rule.path!r}: {error}") from None


def _methods(value: Any, fault: _Fault) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise fault("'methods' must be a non-empty list")
    for method in value:
        if method not in METHODS:
            raise fault(f"unknown method {method!r} (one of {', '.join(sorted(METHODS))})")
    return frozenset(value)


def _host(value: Any, fault: _Fault) -> str | None:
    if value is None:
        return None
    host = value.lower() if isinstance(value, str) else None
    if host is None or not _HOST.fullmatch(host):
        raise fault("'host' must be a host name without scheme, port or path")
    return host


def _scopes(value: Any, fault: _Fault) -> tuple[str, ...] | None:
    """require_auth's forms: "a b" all-of, ["a b", "c"] alternatives; omitted or "" = any token."""
    if value is None or value == "":
        return None
    alternatives = [value] if isinstance(value, str) else value
    if not isinstance(alternatives, list) or not alternatives:
        raise fault("'scopes' must be a string or a non-empty list of strings")
    for alternative in alternatives:
        if not is_scope_list(alternative):
            raise fault(f"scope {alternative!r} is not a space-delimited list of RFC 6749 scope tokens")
    return tuple(alternatives)


def _claims(value: Any, fault: _Fault) -> tuple[tuple[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping) or not value:
        raise fault("'claims' must be a non-empty mapping of claim name to value")
    for claim in value:
        if not isinstance(claim, str) or not claim:
            raise fault("claim names must be non-empty strings")
    return tuple(value.items())


def _step_up(acr_values: Any, max_age: Any, fault: _Fault) -> StepUp | None:
    """The rule's step-up requirement, validated exactly as require_auth validates it."""
    try:
        return StepUp.from_options(acr_values, max_age)
    except ValueError as error:
        raise fault(str(error)) from None


def _flag(value: Any, key: str, fault: _Fault) -> bool:
    if not isinstance(value, bool):
        raise fault(f"'{key}' must be true or false")
    return value


def _dpop(value: Any, default: str, fault: _Fault) -> str | None:
    if value is None:
        return None
    if value not in DPOP_MODES:
        raise fault(f"'dpop' must be one of {', '.join(DPOP_MODES)}")
    if value != "disabled" and default == "disabled":
        raise fault(f"'dpop: {value}' needs AUTH0_DPOP=allowed or required (DPoP is off)")
    return str(value)


def policy_for(settings: Settings) -> Policy | None:
    """The app's policy (None without GATEWAY_POLICY); a bad one is a ConfigError naming it."""
    if settings.gateway_policy is None:
        return None
    try:
        return load_policy(settings.gateway_policy, default_dpop=settings.dpop.mode)
    except PolicyError as error:
        raise ConfigError(f"GATEWAY_POLICY: {error}") from None
