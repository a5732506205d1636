"""Multiprocess metric files: unreadable ones left out (counted, logged once), dead workers folded exactly.

The files are written by prometheus_client itself, in forked children with PROMETHEUS_MULTIPROC_DIR
set, as gunicorn workers write them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from service import metric_files
from service.metric_files import FileCollector
from service.metric_files import fold_dead_worker
from tests.support.procs import metric_sum
from tests.support.procs import parse_metrics

#: Forks one child per level; each records 3 jobs, 2 observations and gauges in three modes,
#: then prints its pid (a child per worker, as gunicorn forks them).
_WORKERS = """
import os, sys
from prometheus_client import Counter, Gauge, Histogram
for level in map(int, sys.argv[1:]):
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        print(pid, flush=True)
        continue
    Counter("jobs", "Jobs done.", ["kind"]).labels("a").inc(3)
    h = Histogram("wait_seconds", "Wait.", buckets=(0.1, 1.0))
    h.observe(0.05)
    h.observe(0.5)
    Gauge("level", "Level.", multiprocess_mode="max").set(level)
    Gauge("per_pid", "Per pid.", multiprocess_mode="all").set(1)
    Gauge("alive", "Alive.", multiprocess_mode="livesum").set(1)
    os._exit(0)
"""
_LEVELS = (5, 2, 7)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """A directory written by prometheus_client in three worker processes, and their pids."""
    path = tmp_path_factory.mktemp("recorded")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(path)}
    proc = subprocess.run(
        [sys.executable, "-c", _WORKERS, *map(str, _LEVELS)],
        env=env, check=True, capture_output=True, text=True,
    )
    return path, [int(pid) for pid in proc.stdout.split()]


def _workers(recorded: tuple[Path, list[int]], into: Path, n: int = len(_LEVELS)) -> list[int]:
    """Copy the files of the first n recorded workers into `into`; their pids."""
    path, pids = recorded
    for pid in pids[:n]:
        for file in path.glob(f"*_{pid}.db"):
            shutil.copy(file, into)
    return pids[:n]


def _scrape(path: Path) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a scrape through FileCollector."""
    registry = CollectorRegistry()
    registry.register(FileCollector(str(path)))
    return parse_metrics(generate_latest(registry).decode())


def _upstream(path: Path) -> bytes:
    """A scrape as prometheus_client's own collector gives it."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))
    return generate_latest(registry)


def test_contract_prometheus_client_still_fails_a_scrape_on_an_empty_file(
    tmp_path: Path, recorded: tuple[Path, list[int]]
) -> None:
    """Upstream (client_python#1199): one empty file fails every scrape. If this test fails,
    upstream reads such files now, and service/metric_files.py may stop filtering."""
    _workers(recorded, tmp_path, 1)
    (tmp_path / "counter_999999.db").write_bytes(b"")
    with pytest.raises(struct.error):
        _upstream(tmp_path)


def test_contract_merged_values_written_back_read_the_same(
    tmp_path: Path, recorded: tuple[Path, list[int]]
) -> None:
    """merge(accumulate=False) written back with MmapedDict (how the fold works) reads exactly
    as the files it came from: counters, histogram buckets and max gauges."""
    _workers(recorded, tmp_path)
    files = sorted(str(f) for f in tmp_path.glob("*.db") if "_all_" not in f.name and "live" not in f.name)
    before = _upstream(tmp_path)
    archive = tmp_path / "folded"
    archive.mkdir()
    for kind in ("counter", "histogram", "gauge_max"):
        group = [f for f in files if Path(f).name.rsplit("_", 1)[0] == kind]
        merged = MultiProcessCollector.merge(group, accumulate=False)
        metric_files._write(str(archive / f"{kind}_dead.db"), merged)
    for file in tmp_path.glob("*.db"):
        if "_all_" in file.name or "live" in file.name:
            file.rename(archive / file.name)
    # The same samples (families come in file order, which the fold changes).
    assert sorted(_upstream(archive).splitlines()) == sorted(before.splitlines())


@pytest.mark.parametrize("content", [b"", b"\x08\x00\x00", struct.pack("i", 4096) + b"\0" * 60])
def test_an_empty_or_truncated_file_is_left_out_and_totals_stay_exact(
    tmp_path: Path, recorded: tuple[Path, list[int]], content: bytes
) -> None:
    _workers(recorded, tmp_path, 2)
    (tmp_path / "counter_999999.db").write_bytes(content)
    samples = _scrape(tmp_path)
    assert metric_sum(samples, "jobs_total", kind="a") == 6
    assert metric_sum(samples, "wait_seconds_count") == 4
    assert metric_sum(samples, "wait_seconds_bucket", le="0.1") == 2
    assert metric_sum(samples, "metrics_files_skipped") == 1


def test_a_readable_directory_skips_nothing(tmp_path: Path, recorded: tuple[Path, list[int]]) -> None:
    _workers(recorded, tmp_path, 1)
    samples = _scrape(tmp_path)
    assert metric_sum(samples, "jobs_total") == 3
    assert metric_sum(samples, "metrics_files_skipped") == 0


def test_a_skipped_file_is_logged_once_while_it_stays(
    tmp_path: Path, recorded: tuple[Path, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    _workers(recorded, tmp_path, 1)
    collector = FileCollector(str(tmp_path))
    empty = tmp_path / "counter_999999.db"
    empty.write_bytes(b"")
    (tmp_path / "histogram_999998.db").write_bytes(b"abc")
    with caplog.at_level(logging.WARNING, logger="service.metric_files"):
        for _ in range(3):
            list(collector.collect())
        assert sorted(r.file for r in caplog.records) == ["counter_999999.db", "histogram_999998.db"]  # type: ignore[attr-defined]
        empty.unlink()
        list(collector.collect())
        empty.write_bytes(b"")
        list(collector.collect())
    assert [r.file for r in caplog.records].count("counter_999999.db") == 2  # type: ignore[attr-defined]


def test_a_dead_workers_files_fold_into_one_archive_per_kind_exactly(
    tmp_path: Path, recorded: tuple[Path, list[int]]
) -> None:
    pids = _workers(recorded, tmp_path)
    before = _scrape(tmp_path)
    for pid in pids:
        removed = fold_dead_worker(str(tmp_path), pid)
        assert sorted(removed) == sorted(f"{k}_{pid}.db" for k in ("counter", "histogram", "gauge_max"))
    names = sorted(f.name for f in tmp_path.glob("*.db"))
    # Folded kinds: one file each, however many workers died; live gauges gone; per-pid gauges kept.
    archives = ["counter_dead.db", "histogram_dead.db", "gauge_max_dead.db"]
    assert names == sorted(archives + [f"gauge_all_{pid}.db" for pid in pids])
    after = _scrape(tmp_path)
    kept = [s for s in before if s[0] != "alive"]
    assert sorted(map(repr, after)) == sorted(map(repr, kept))
    assert metric_sum(after, "jobs_total") == 9 and metric_sum(after, "level") == 7


def test_a_dead_workers_unreadable_file_is_removed(tmp_path: Path, recorded: tuple[Path, list[int]]) -> None:
    (pid,) = _workers(recorded, tmp_path, 1)
    (tmp_path / f"summary_{pid}.db").write_bytes(b"")
    assert f"summary_{pid}.db" in fold_dead_worker(str(tmp_path), pid)
    assert not list(tmp_path.glob(f"*summary_{pid}.db"))
    assert metric_sum(_scrape(tmp_path), "metrics_files_skipped") == 0


def test_a_fold_waits_for_a_workers_running_scrape(
    tmp_path: Path, recorded: tuple[Path, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's scrape holds the lock file shared: the fold gives up after its wait, files kept."""
    (pid,) = _workers(recorded, tmp_path, 1)
    monkeypatch.setattr(metric_files, "FOLD_WAIT_SECONDS", 0.05)
    with metric_files._file_locked(str(tmp_path), fcntl.LOCK_SH, None):
        assert fold_dead_worker(str(tmp_path), pid) == []
    assert (tmp_path / f"counter_{pid}.db").exists()
    assert fold_dead_worker(str(tmp_path), pid)


def test_a_fold_waits_for_a_scrape_of_its_own_process(
    tmp_path: Path, recorded: tuple[Path, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The master's listener scrapes under the process lock, and opens no lock file."""
    (pid,) = _workers(recorded, tmp_path, 1)
    assert metric_sum(parse_metrics(_master_scrape(tmp_path)), "jobs_total") == 3
    assert not (tmp_path / metric_files._LOCK_NAME).exists()
    monkeypatch.setattr(metric_files, "FOLD_WAIT_SECONDS", 0.05)
    with metric_files._process_locked(None):
        assert fold_dead_worker(str(tmp_path), pid) == []
    assert fold_dead_worker(str(tmp_path), pid)


def _master_scrape(path: Path) -> str:
    """A scrape as the gunicorn master's listener makes it."""
    registry = CollectorRegistry()
    registry.register(FileCollector(str(path), lock_file=False))
    return generate_latest(registry).decode()


def test_a_fork_child_does_not_inherit_a_held_process_lock() -> None:
    """gunicorn forks workers while the master's serving threads may hold the lock."""
    script = """
import os, threading, time
from service import metric_files
held, done = threading.Event(), threading.Event()
def hold():
    with metric_files._process_locked(None):
        held.set()
        done.wait(5)
threading.Thread(target=hold).start()
held.wait(5)
pid = os.fork()
if pid == 0:
    with metric_files._process_locked(time.monotonic() + 1) as had:
        os._exit(0 if had else 1)
_, status = os.waitpid(pid, 0)
done.set()
print(os.waitstatus_to_exitcode(status))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "0", proc.stderr


def test_a_fold_that_fails_keeps_the_files_and_does_not_raise(
    tmp_path: Path, recorded: tuple[Path, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    """The master runs the fold: a failure is logged, and the worker's files keep counting."""
    (pid,) = _workers(recorded, tmp_path, 1)
    (tmp_path / "counter_dead.db").mkdir()
    with caplog.at_level(logging.ERROR, logger="service.metric_files"):
        fold_dead_worker(str(tmp_path), pid)
    assert (tmp_path / f"counter_{pid}.db").exists()
    assert [r.getMessage() for r in caplog.records] == ["metrics_fold_failed"]
    (tmp_path / "counter_dead.db").rmdir()
    assert metric_sum(_scrape(tmp_path), "jobs_total") == 3
