"""Two trusted issuers under real gunicorn: both served, no cross-issuer tokens, isolation, config."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.helpers import eventually
from tests.support.issuer import LocalIssuer
from tests.support.procs import REPO
from tests.support.procs import ServerFactory
from tests.support.procs import clean_env
from tests.support.procs import free_port
from tests.support.procs import launch
from tests.support.procs import metric_sum
from tests.support.procs import run_to_exit
from tests.support.procs import service_env

pytestmark = pytest.mark.slow


def _trusting(*issuers: LocalIssuer) -> dict[str, str]:
    return {"AUTH0_ISSUER": ",".join(i.url for i in issuers)}


def test_two_issuers_are_served_and_never_cross(gunicorn: ServerFactory) -> None:
    with LocalIssuer() as a, LocalIssuer() as b, LocalIssuer() as stranger:
        server = gunicorn(a, workers=2, env=_trusting(a, b))
        for issuer in (a, b):
            assert server.get("/api/private-scoped", token=issuer.mint()).status == 200
        assert server.get("/api/private", token=a.mint({"iss": b.url})).status == 401
        assert server.get("/api/private", token=b.mint({"iss": a.url})).status == 401
        unknown = server.get("/api/private", token=stranger.mint())
        assert unknown.status == 401 and 'error="invalid_token"' in unknown.header("WWW-Authenticate")
        assert (stranger.jwks_fetches, stranger.discovery_fetches) == (0, 0)
        records = server.wait_for_record(
            lambda r: r.get("event") == "auth_decision" and r.get("reason") == "bad_issuer", timeout=5
        )
        assert len(records) == 1


def test_one_issuer_down_leaves_the_other_serving_and_ready(gunicorn: ServerFactory) -> None:
    with LocalIssuer() as a, LocalIssuer() as b:
        b.go_down()
        server = gunicorn(a, workers=1, env=_trusting(a, b))
        ready = server.get("/readyz")
        assert ready.status == 200
        states = {s["issuer"]: s["status"] for s in ready.json()["issuers"]}
        assert states == {a.url: "ready", b.url: "unavailable"}
        token_a = a.mint()
        assert server.get("/api/private", token=b.mint()).status == 503
        assert all(server.get("/api/private", token=token_a).status == 200 for _ in range(5))
        samples = server.metrics()
        assert metric_sum(samples, "jwks_fetches_total", issuer=a.url, outcome="success") >= 1
        assert metric_sum(samples, "jwks_fetches_total", issuer=b.url, outcome="error") >= 1
        assert metric_sum(samples, "jwks_fetches_total", issuer=a.url, outcome="error") == 0
        b.come_up()
        assert eventually(lambda: server.get("/api/private", token=b.mint()).status == 200, timeout=10)


def test_jwks_uri_with_several_issuers_exits_78_naming_it(issuer: LocalIssuer, tmp_path: Path) -> None:
    env = service_env(
        issuer,
        tmp_path / "prom",
        {"AUTH0_ISSUER": f"{issuer.url},https://other.example/", "AUTH0_JWKS_URI": issuer.jwks_uri},
    )
    code, out, err = run_to_exit(env, log_dir=tmp_path / "logs", timeout=30)
    output = out + err
    assert code == 78, output[-3000:]
    assert "Traceback" not in output
    assert len([line for line in output.splitlines() if "AUTH0_JWKS_URI" in line]) == 1, output[-3000:]


def _token(issuer_url: str, audience: str) -> str:
    body = json.dumps({
        "client_id": "dev-client", "client_secret": "dev-secret",
        "audience": audience, "grant_type": "client_credentials",
    }).encode()
    request = urllib.request.Request(
        issuer_url + "oauth/token", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["access_token"]


def test_the_dev_issuer_serves_two_issuers_end_to_end(tmp_path: Path) -> None:
    port = free_port()
    primary = f"http://127.0.0.1:{port}/"
    second = f"{primary}eu/"
    audience = "https://api.dev.local"
    env = clean_env({"DEV_ISSUER_PORT": str(port), "DEV_ISSUER_EXTRA_PATHS": "eu"})
    log = (tmp_path / "issuer.log").open("wb")
    issuer = subprocess.Popen(
        [sys.executable, "-m", "dev_issuer"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    server = None
    try:
        assert eventually(lambda: _up(primary + "healthz"), timeout=15)
        api_env = clean_env({
            "AUTH0_ISSUER": f"{primary},{second}", "AUTH0_AUDIENCE": audience,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"), "LOG_FORMAT": "json",
        })
        (tmp_path / "prom").mkdir()
        server = launch(api_env, log_dir=tmp_path / "logs", workers=1)
        server.wait_ready()
        tokens = {url: _token(url, audience) for url in (primary, second)}
        for url, token in tokens.items():
            assert server.get("/api/private-scoped", token=token).status == 200, url
        states = {s["issuer"]: s["status"] for s in server.get("/readyz").json()["issuers"]}
        assert states == {primary: "ready", second: "ready"}
    finally:
        if server is not None:
            server.stop()
        issuer.terminate()
        issuer.wait(timeout=10)
        log.close()


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
