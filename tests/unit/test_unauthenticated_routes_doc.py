"""docs/security.md says, in one table, what every route without a token reveals and how to close it."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from service.web.resource_metadata import SCOPES_ATTRIBUTE
from tests.support.appkit import app_for
from tests.support.issuer import LocalIssuer

ROOT = Path(__file__).resolve().parents[2]
SECURITY = (ROOT / "docs" / "security.md").read_text()
HEADING = "## What the unauthenticated routes reveal"


def table_rows() -> dict[str, list[str]]:
    """route -> its cells, from the one table under the heading."""
    assert SECURITY.count(HEADING) == 1
    section = SECURITY[SECURITY.index(HEADING) + len(HEADING):].split("\n## ")[0]
    tables = [block for block in section.split("\n\n") if block.lstrip().startswith("|")]
    assert len(tables) == 1, "one table"
    lines = tables[0].strip().splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == ["route", "reveals", "how to close it"]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.split("|")[1:-1]]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def unauthenticated_routes(app: Flask) -> set[str]:
    """Every GET rule whose view has no require_auth (which marks its views), path part only."""
    routes = set()
    for rule in app.url_map.iter_rules():
        protected = hasattr(app.view_functions[rule.endpoint], SCOPES_ATTRIBUTE)
        if "GET" in (rule.methods or ()) and rule.endpoint != "static" and not protected:
            routes.add(rule.rule.split("/<", 1)[0])
    return routes


@pytest.fixture(scope="module")
def app(module_issuer: LocalIssuer) -> Flask:
    """The app as the image runs it: /metrics on the app port."""
    return app_for(module_issuer)


def test_every_unauthenticated_route_has_a_row_saying_what_it_reveals_and_how_to_close_it(app: Flask) -> None:
    routes = unauthenticated_routes(app)
    assert {"/readyz", "/metrics", "/.well-known/oauth-protected-resource"} <= routes
    rows = table_rows()
    assert routes == set(rows), "one row per unauthenticated route, no stale rows"
    for route, (reveals, close) in rows.items():
        assert reveals and close, route


def test_the_way_to_close_metrics_is_what_the_prod_overlay_does(module_issuer: LocalIssuer) -> None:
    """The row names METRICS_PORT; with it the app port answers 404 for /metrics."""
    assert "`METRICS_PORT`" in table_rows()["/metrics"][1]
    prod = (ROOT / "deploy" / "overlays" / "prod" / "kustomization.yaml").read_text()
    assert "- METRICS_PORT=9100" in prod
    moved = app_for(module_issuer, METRICS_PORT="9100").test_client()
    assert moved.get("/metrics").status_code == 404
