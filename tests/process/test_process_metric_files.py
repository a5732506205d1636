"""Metric files of a real gunicorn: broken files never fail a scrape, dead workers leave nothing,
and a start that fails (or --check-config) leaves no metrics directory behind."""

from __future__ import annotations

import os
import signal
import socket
from functools import partial
from pathlib import Path

import pytest

from tests.support.helpers import eventually
from tests.support.helpers import get_many
from tests.support.helpers import statuses
from tests.support.helpers import warm
from tests.support.issuer import LocalIssuer
from tests.support.procs import Server
from tests.support.procs import ServerFactory
from tests.support.procs import free_port
from tests.support.procs import http_get
from tests.support.procs import metric_sum
from tests.support.procs import parse_metrics
from tests.support.procs import run_to_exit
from tests.support.procs import service_env

pytestmark = pytest.mark.slow

PRIVATE = "/api/private"
WORKERS = 2
#: What a worker killed between creating its file and sizing it leaves, and a cut-off file.
BROKEN = {"counter_999999.db": b"", "histogram_999998.db": b"\x08\x00\x00"}


def _scrape(server: Server, metrics_port: int | None) -> list[tuple[str, dict[str, str], float]]:
    """One scrape where this server serves /metrics (asserting 200)."""
    resp = http_get(metrics_port, "/metrics") if metrics_port else server.get("/metrics")
    assert resp.status == 200, resp.body[:300]
    return parse_metrics(resp.body.decode())


def _replaced(server: Server, pid: int) -> bool:
    """The worker `pid` is gone and the master runs a full set again."""
    workers = server.workers()
    return pid not in workers and len(workers) == WORKERS


def _no_files_of(path: Path, pid: int) -> bool:
    """No metric file of `pid` is left in `path`."""
    return not list(path.glob(f"*_{pid}.db"))


@pytest.mark.parametrize("where", ["app_port", "metrics_port"])
def test_empty_and_truncated_files_are_skipped_and_counts_stay_exact(
    issuer: LocalIssuer, gunicorn: ServerFactory, where: str
) -> None:
    metrics_port = free_port() if where == "metrics_port" else None
    env = {"METRICS_PORT": str(metrics_port)} if metrics_port else {}
    server = gunicorn(issuer, workers=WORKERS, env=env)
    warm(server, issuer, WORKERS)
    before = metric_sum(_scrape(server, metrics_port), "auth_decisions_total", outcome="allow")
    token = issuer.mint()
    assert statuses(get_many(server, PRIVATE, [token] * 20, concurrency=5)) == [200] * 20
    assert server.metrics_dir is not None
    for name, content in BROKEN.items():
        (server.metrics_dir / name).write_bytes(content)
    for _ in range(3 * WORKERS):
        samples = _scrape(server, metrics_port)
        assert metric_sum(samples, "auth_decisions_total", outcome="allow") == before + 20
        assert metric_sum(samples, "metrics_files_skipped") == len(BROKEN)
    logged = [r for r in server.records() if r.get("event") == "metrics_file_skipped"]
    # Once per file by each process that scrapes: the master, or each worker.
    per_file = {name: sum(r.get("file") == name for r in logged) for name in BROKEN}
    scrapers = 1 if metrics_port else WORKERS
    assert all(1 <= n <= scrapers for n in per_file.values()), logged
    assert all(r["level"] == "warning" for r in logged)


def test_a_dead_workers_files_are_folded_and_nothing_accumulates(
    issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    """SIGKILL workers one after another: their counts stay, their files go, none pile up."""
    server = gunicorn(issuer, workers=WORKERS)
    assert server.metrics_dir is not None
    left = server.metrics_dir
    token = issuer.mint()
    total = 0
    for _ in range(3):
        assert statuses(get_many(server, PRIVATE, [token] * 10, concurrency=5)) == [200] * 10
        total += 10
        victim = server.workers()[0]
        # A worker killed between creating a file and sizing it leaves exactly this.
        (left / f"summary_{victim}.db").write_bytes(b"")
        os.kill(victim, signal.SIGKILL)
        assert eventually(partial(_replaced, server, victim), timeout=15)
        server.wait_booted(WORKERS)
        assert eventually(partial(_no_files_of, left, victim), timeout=5), sorted(
            p.name for p in left.glob("*.db")
        )
        samples = server.metrics()
        assert metric_sum(samples, "auth_decisions_total", outcome="allow") == total
        assert metric_sum(samples, "metrics_files_skipped") == 0
        # Only live workers' files and one archive per kind: nothing grows with the deaths.
        owners = {p.stem.rsplit("_", 1)[1] for p in left.glob("*.db")}
        assert owners <= {*map(str, server.workers()), "dead"}, owners


def _leftovers(tmp: Path) -> list[str]:
    """Metrics directories gunicorn.conf.py made for itself and left in `tmp`."""
    return sorted(p.name for p in tmp.glob("api-metrics-*"))


def _own_dir_env(
    issuer: LocalIssuer, tmp_path: Path, extra: dict[str, str | None]
) -> tuple[dict[str, str], Path]:
    """An environment without PROMETHEUS_MULTIPROC_DIR, whose temp directory is a fresh one."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    overrides = {"PROMETHEUS_MULTIPROC_DIR": None, "TMPDIR": str(tmp), **extra}
    env = service_env(issuer, tmp_path / "unused", overrides)
    return env, tmp


@pytest.mark.parametrize(
    ("extra", "args", "code"),
    [
        ({}, ("--check-config",), 0),
        ({"AUTH0_AUDIENCE": None}, (), 78),
        ({"METRICS_PORT": "http"}, (), 78),
        ({"GUNICORN_THREADS": "0"}, (), 78),
    ],
    ids=["check_config", "missing_setting", "bad_metrics_port", "bad_gunicorn_setting"],
)
def test_a_start_that_ends_leaves_no_metrics_directory(
    issuer: LocalIssuer, tmp_path: Path, extra: dict[str, str | None], args: tuple[str, ...], code: int
) -> None:
    env, tmp = _own_dir_env(issuer, tmp_path, extra)
    got, out, err = run_to_exit(env, log_dir=tmp_path / "logs", args=args)
    assert got == code, (out + err)[-2000:]
    assert _leftovers(tmp) == []


def test_a_busy_port_leaves_no_metrics_directory(issuer: LocalIssuer, tmp_path: Path) -> None:
    env, tmp = _own_dir_env(issuer, tmp_path, {})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        got, out, err = run_to_exit(env, log_dir=tmp_path / "logs", args=("--bind", f"127.0.0.1:{port}"))
    assert got != 0, (out + err)[-2000:]
    assert _leftovers(tmp) == []


def test_a_stopped_server_leaves_no_metrics_directory(
    issuer: LocalIssuer, gunicorn: ServerFactory, tmp_path: Path
) -> None:
    env, tmp = _own_dir_env(issuer, tmp_path, {})
    server = gunicorn(issuer, workers=1, env={k: env.get(k) for k in ("PROMETHEUS_MULTIPROC_DIR", "TMPDIR")})
    assert _leftovers(tmp) == [f"api-metrics-{server.pid}"]
    assert server.terminate() == 0
    assert _leftovers(tmp) == []
