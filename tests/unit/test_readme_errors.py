"""The README's error table and troubleshooting rows say what the service really sends."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from tests.support.appkit import bearer
from tests.support.appkit import client_for
from tests.support.issuer import LocalIssuer

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def error_table() -> dict[int, list[str]]:
    """status -> the WWW-Authenticate templates of the README's RFC 6750 error table."""
    section = README[README.index("**Errors (RFC 6750).**"):]
    rows: dict[int, list[str]] = {}
    for line in section.splitlines()[1:]:
        if line.startswith("Nothing a client sends"):
            break
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 3 and cells[1].isdigit() and cells[2].startswith("`Bearer"):
            rows.setdefault(int(cells[1]), []).append(cells[2].split("`")[1])
    return rows


def pattern(template: str) -> re.Pattern[str]:
    """A template as a regex: each "..." value stands for any quoted string; a trailing ", ..."
    for any further parameters."""
    escaped = re.escape(template).replace(re.escape('"..."'), '"[^"]*"')
    return re.compile(escaped.replace(re.escape(", ..."), "(, .*)?"))


@pytest.fixture(scope="module")
def requests(client: FlaskClient, module_issuer: LocalIssuer) -> dict[str, list[str]]:
    """WWW-Authenticate values of each README table situation, keyed by what was sent."""
    sent = {
        "401 none": client.get("/api/private"),
        "401 rejected": client.get("/api/private", headers=bearer("nonsense")),
        "403": client.get("/api/private-scoped", headers=bearer(module_issuer.mint(scope=None))),
        "400": client.get("/api/private", headers={"Authorization": "Bearer a b"}),
    }
    for name, response in sent.items():
        assert response.status_code == int(name[:3]), (name, response.status_code)
    return {name: response.headers.getlist("WWW-Authenticate") for name, response in sent.items()}


def test_the_readme_error_table_has_a_challenge_for_each_refusal() -> None:
    table = error_table()
    assert sorted(table) == [400, 401, 403]
    assert len(table[401]) == 2


@pytest.mark.parametrize("status", [400, 401, 403])
def test_each_challenge_in_the_readme_error_table_matches_the_bytes_sent(
    status: int, requests: dict[str, list[str]]
) -> None:
    """Same parameters in the same order: a client parsing by the table gets what it expects."""
    sent = {name: values for name, values in requests.items() if name.startswith(str(status))}
    for template in error_table()[status]:
        regex = pattern(template)
        assert any(
            regex.fullmatch(value) for values in sent.values() for value in values
        ), f"README {status} row {template!r} matches none of {sent}"


def test_with_public_url_each_challenge_is_the_readmes_plus_the_resource_metadata_it_states(
    module_issuer: LocalIssuer,
) -> None:
    """bin/dev, compose and the prod overlay set PUBLIC_URL: the walk-through's bytes end with
    RFC 9728's resource_metadata, which the README states next to its table."""
    suffix = ', resource_metadata="..."'
    section = README[README.index("**Errors (RFC 6750).**"):README.index("Nothing a client sends")]
    assert f"`{suffix}`" in section and "PUBLIC_URL" in section
    client = client_for(module_issuer, PUBLIC_URL="https://api.example.com")
    def challenges(path: str, headers: dict[str, str] | None = None) -> list[str]:
        return client.get(path, headers=headers).headers.getlist("WWW-Authenticate")

    sent = {
        401: challenges("/api/private") + challenges("/api/private", bearer("nonsense")),
        403: challenges("/api/private-scoped", bearer(module_issuer.mint(scope=None))),
        400: challenges("/api/private", {"Authorization": "Bearer a b"}),
    }
    for status, templates in error_table().items():
        for template in templates:
            regex = pattern(template + suffix)
            assert any(regex.fullmatch(value) for value in sent[status]), (template, sent[status])


def test_troubleshooting_has_the_reason_a_token_for_another_api_gets(
    client: FlaskClient, module_issuer: LocalIssuer
) -> None:
    """The reason a wrong `aud` is denied with is the one the troubleshooting row names."""
    labels = {"route": "/api/private", "outcome": "deny", "reason": "bad_audience", "scheme": "bearer"}
    before = REGISTRY.get_sample_value("auth_decisions_total", labels) or 0.0
    token = module_issuer.mint({"aud": "https://another-api.example"})
    response = client.get("/api/private", headers=bearer(token))
    assert response.status_code == 401
    assert REGISTRY.get_sample_value("auth_decisions_total", labels) == before + 1
    rows = [line for line in README.splitlines() if line.startswith("| ") and "`bad_audience`" in line]
    assert len(rows) == 1, "one troubleshooting row for bad_audience"
    assert "`AUTH0_AUDIENCE`" in rows[0] and "`audience`" in rows[0]
    quoted = rows[0].split('("')[1].split('")')[0]
    assert response.json["error_description"].rstrip(".").endswith(quoted)
