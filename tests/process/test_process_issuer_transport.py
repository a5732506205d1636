"""Real gunicorn start-up with a plain-http issuer: refused (exit 78, one line) unless allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.issuer import LocalIssuer
from tests.support.procs import ServerFactory
from tests.support.procs import run_to_exit
from tests.support.procs import service_env

pytestmark = pytest.mark.slow

#: Never contacted: start-up does no network I/O, the refusal happens before any worker exists.
REMOTE_HTTP_ISSUER = "http://issuer.example.com/"


def test_a_remote_plain_http_issuer_stops_the_start_with_exit_78(
    issuer: LocalIssuer, tmp_path: Path
) -> None:
    env = service_env(issuer, tmp_path / "prom", {"AUTH0_ISSUER": REMOTE_HTTP_ISSUER})
    code, out, err = run_to_exit(env, log_dir=tmp_path / "logs", timeout=30)
    output = out + err
    assert code == 78, output[-3000:]
    assert "Traceback" not in output
    naming = [line for line in output.splitlines() if "AUTH0_ISSUER" in line]
    assert len(naming) == 1 and "plain http" in naming[0], output[-3000:]


def test_a_malformed_insecure_flag_stops_the_start_naming_it(issuer: LocalIssuer, tmp_path: Path) -> None:
    env = service_env(issuer, tmp_path / "prom", {"AUTH0_ALLOW_INSECURE_ISSUER": "yes"})
    code, out, err = run_to_exit(env, log_dir=tmp_path / "logs", timeout=30)
    naming = [line for line in (out + err).splitlines() if "AUTH0_ALLOW_INSECURE_ISSUER" in line]
    assert code == 78 and len(naming) == 1, (out + err)[-3000:]


@pytest.mark.parametrize(
    "overrides",
    [
        {"AUTH0_ISSUER": REMOTE_HTTP_ISSUER, "AUTH0_ALLOW_INSECURE_ISSUER": "1"},
        {"AUTH0_ISSUER": "http://issuer:3011/"},
    ],
    ids=["allowed_by_flag", "dev_issuer_service_name"],
)
def test_an_allowed_plain_http_issuer_starts_and_serves(
    issuer: LocalIssuer, gunicorn: ServerFactory, overrides: dict[str, str]
) -> None:
    server = gunicorn(issuer, workers=1, env=overrides)
    assert server.get("/healthz").status == 200
    # Its tokens would be judged against that issuer: ours, from another one, are refused.
    assert server.get("/api/private", token=issuer.mint()).status == 401
