"""Start-up of the real gunicorn process: configuration errors, CLI precedence, worker count."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.helpers import eventually
from tests.support.issuer import LocalIssuer
from tests.support.procs import ServerFactory
from tests.support.procs import free_port
from tests.support.procs import http_get
from tests.support.procs import run_to_exit
from tests.support.procs import service_env

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"AUTH0_AUDIENCE": None}, ("AUTH0_AUDIENCE",)),
        ({"AUTH0_AUDIENCE": ""}, ("AUTH0_AUDIENCE",)),
        ({"AUTH0_ISSUER": None, "AUTH0_DOMAIN": None}, ("AUTH0_DOMAIN", "AUTH0_ISSUER")),
    ],
    ids=["audience_unset", "audience_empty", "no_domain_nor_issuer"],
)
def test_missing_setting_exits_with_one_clear_line(
    issuer: LocalIssuer, tmp_path: Path, overrides: dict[str, str | None], names: tuple[str, ...]
) -> None:
    """Exit 78, exactly one `configuration error: NAME: ...` line, and no traceback."""
    env = service_env(issuer, tmp_path / "prom", overrides)
    code, out, err = run_to_exit(env, log_dir=tmp_path / "logs", timeout=30)
    assert code == 78
    output = out + err
    assert "Traceback" not in output, output[-3000:]
    naming = [line for line in output.splitlines() if any(name in line for name in names)]
    assert len(naming) == 1, output[-3000:]
    assert naming[0].startswith(f"configuration error: {names[0]}: "), naming[0]


def test_cli_workers_win_over_web_concurrency(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """--workers on the command line beats WEB_CONCURRENCY."""
    server = gunicorn(issuer, workers=3, env={"WEB_CONCURRENCY": "1"})
    assert len(server.wait_workers(3)) == 3


def test_web_concurrency_sets_worker_count(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """Without --workers, WEB_CONCURRENCY decides."""
    server = gunicorn(issuer, workers=None, env={"WEB_CONCURRENCY": "3"})
    assert len(server.wait_workers(3)) == 3


def test_default_worker_count_is_two(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """Neither --workers nor WEB_CONCURRENCY: two workers, not a CPU-derived number."""
    server = gunicorn(issuer, workers=None)
    assert len(server.wait_workers(2)) == 2


def test_cli_bind_wins_over_port(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """--bind on the command line beats PORT (the config's default bind)."""
    other = free_port()
    server = gunicorn(issuer, workers=1, env={"PORT": str(other)})
    assert server.get("/healthz").status == 200
    with pytest.raises(OSError):
        http_get(other, "/healthz", timeout=2)


def test_starts_and_serves_public_routes_while_the_issuer_hangs(
    issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    """Boot never waits for the issuer: workers fetch keys in the background after fork."""
    issuer.delay = 30.0  # the JWKS endpoint accepts connections and never answers in time
    server = gunicorn(issuer, workers=2, env={"AUTH0_HTTP_TIMEOUT": "20", "AUTH0_JWKS_RETRY": "30"})
    health = server.get("/healthz")
    assert health.json() == {"status": "ok"} and health.elapsed < 1.0
    public = server.get("/api/public")
    assert public.status == 200 and "message" in public.json() and public.elapsed < 1.0
    assert server.get("/metrics").status == 200
    # Each worker's background fetch is under way (one JWKS GET each, none from the master).
    assert eventually(lambda: issuer.jwks_fetches >= 2, timeout=5)
    assert issuer.jwks_fetches == 2
    issuer.delay = 0.0
