"""prometheus_client's multiprocess files: merged without unreadable ones; a dead worker's folded in.

A worker creates its file empty and sizes it a moment later, and a worker killed in between leaves
the empty file behind. prometheus_client fails the whole scrape on such a file
(https://github.com/prometheus/client_python/issues/1199), so the collector here leaves out every
file the library cannot read, counts it in ``metrics_files_skipped`` and logs it once. Standard
library plus prometheus_client only: the gunicorn master uses this module and loads no Flask.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import threading
import time
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence

from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.mmap_dict import mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.multiprocess import mark_process_dead

from .fork_safe import ForkSafeLock

#: Sample of every scrape: how many files it left out.
SKIPPED_METRIC = "metrics_files_skipped"
#: Kinds of file whose merged values stay exact when folded into one file: counters, histograms
#: and summaries add up, and gauges in these modes reduce the same way a second time. Gauges in
#: mode "all" are labelled by pid and "mostrecent" needs timestamps merge() does not return: left.
FOLDABLE_KINDS = frozenset({"counter", "histogram", "summary", "gauge_max", "gauge_min", "gauge_sum"})
#: Longest the gunicorn master waits for running scrapes before it folds (then it leaves the files).
FOLD_WAIT_SECONDS = 2.0
#: The lock file (not ``*.db``, so the collector never reads it): scrapes share it, folds own it.
_LOCK_NAME = ".fold.lock"
#: What the archive of a kind is called: ``<kind>_dead.db`` (a name no pid can take).
_ARCHIVE_PID = "dead"

_log = logging.getLogger("service.metric_files")


#: Scrapes and folds within one process (the gunicorn master's serving threads and its fold).
_process_lock = ForkSafeLock()


@contextlib.contextmanager
def _file_locked(path: str, operation: int, until: float | None) -> Iterator[bool]:
    """Hold flock(operation) on the directory's lock file; False if not had by `until` (None: wait)."""
    try:
        fd = os.open(os.path.join(path, _LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        # No directory (yet): nothing to read, nothing to fold.
        yield operation == fcntl.LOCK_SH
        return
    try:
        while True:
            try:
                fcntl.flock(fd, operation | (fcntl.LOCK_NB if until is not None else 0))
                break
            except BlockingIOError:
                if until is None or time.monotonic() >= until:
                    yield False
                    return
                time.sleep(0.01)
        yield True
    finally:
        os.close(fd)


@contextlib.contextmanager
def _process_locked(until: float | None) -> Iterator[bool]:
    """Hold this process's lock; False if not had by `until` (None: wait)."""
    timeout = -1.0 if until is None else max(0.0, until - time.monotonic())
    if not _process_lock.acquire(timeout=timeout):
        yield False
        return
    try:
        yield True
    finally:
        _process_lock.release()


def readable(file: str) -> bool:
    """True when prometheus_client reads the file without an error."""
    try:
        MultiProcessCollector.merge([file], accumulate=False)
    # Which error depends on where the file ends: struct.error, RuntimeError, ValueError, OSError.
    except Exception:
        return False
    return True


def merge_readable(files: Sequence[str]) -> tuple[list[Metric], list[str]]:
    """The merged metrics of every readable file, and the files left out."""
    try:
        return list(MultiProcessCollector.merge(files, accumulate=True)), []
    except Exception:
        # Rare (a worker starting this very moment): find the unreadable files one by one.
        good = [file for file in files if readable(file)]
        skipped = [file for file in files if file not in good]
        return list(MultiProcessCollector.merge(good, accumulate=True)), skipped


class FileCollector:
    """Collector over PROMETHEUS_MULTIPROC_DIR that leaves out, counts and logs unreadable files."""

    def __init__(self, path: str, *, lock_file: bool = True) -> None:
        """Read the files of `path`; lock_file=False in the process that folds (the gunicorn master).

        A fold must not run in the middle of a scrape. Workers share the directory's lock file with
        the master's fold. The master itself must not: it forks workers, and a child would inherit
        a descriptor a serving thread had open at that moment, holding the lock for the child's life.
        """
        self._path = path
        self._lock_file = lock_file
        self._lock = threading.Lock()
        #: Names already logged as skipped (only those still present are kept: bounded).
        self._logged: set[str] = set()

    def collect(self) -> Iterable[Metric]:
        """Every readable file's metrics merged, then the count of files left out."""
        locked = (
            _file_locked(self._path, fcntl.LOCK_SH, None) if self._lock_file else _process_locked(None)
        )
        with locked:
            files = sorted(glob.glob(os.path.join(self._path, "*.db")))
            metrics, skipped = merge_readable(files)
        self._log_once(skipped)
        family = GaugeMetricFamily(
            SKIPPED_METRIC,
            "Metric files this scrape left out because they are empty or truncated.",
            value=len(skipped),
        )
        return [*metrics, family]

    def _log_once(self, skipped: list[str]) -> None:
        """One warning per skipped file name, for as long as that file stays."""
        names = {os.path.basename(file) for file in skipped}
        with self._lock:
            new = names - self._logged
            self._logged = names
        for name in sorted(new):
            _log.warning("metrics_file_skipped", extra={"file": name, "reason": "empty or truncated"})


def _kind(name: str) -> str:
    """``counter`` of ``counter_12.db``, ``gauge_max`` of ``gauge_max_12.db``."""
    return name.rsplit("_", 1)[0]


def _write(file: str, metrics: Iterable[Metric]) -> None:
    """Write merged (not accumulated) metrics as one multiprocess file, replacing `file` at once."""
    temporary = file + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.remove(temporary)
    try:
        # The store prometheus_client writes its own files with; merge(accumulate=False) is meant
        # for writing merged values back (its docstring).
        store = MmapedDict(temporary)
        try:
            for metric in metrics:
                for sample in metric.samples:
                    key = mmap_key(
                        metric.name, sample.name, list(sample.labels), list(sample.labels.values()),
                        metric.documentation,
                    )
                    store.write_value(key, sample.value, sample.timestamp or 0.0)
        finally:
            store.close()
        os.replace(temporary, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def _fold(path: str, file: str) -> bool:
    """Fold one dead worker's file into its kind's archive; False if its kind does not fold."""
    kind = _kind(os.path.basename(file))
    if kind not in FOLDABLE_KINDS:
        return False
    archive = os.path.join(path, f"{kind}_{_ARCHIVE_PID}.db")
    sources = [archive, file] if os.path.exists(archive) else [file]
    _write(archive, MultiProcessCollector.merge(sources, accumulate=False))
    return True


def fold_dead_worker(path: str, pid: int) -> list[str]:
    """Fold a dead worker's files into one archive per kind and remove them; returns those removed.

    Live gauges go (prometheus_client's mark_process_dead); unreadable files hold no counts and
    go; files of other kinds stay. Scrapes wait meanwhile, so no total is ever seen twice or not
    at all. Never raises: this runs in the gunicorn master, which must outlive any file.
    """
    removed: list[str] = []
    try:
        mark_process_dead(pid, path)
        until = time.monotonic() + FOLD_WAIT_SECONDS
        with _process_locked(until) as in_process, _file_locked(path, fcntl.LOCK_EX, until) as held:
            if not (in_process and held):
                _log.warning("metrics_fold_skipped", extra={"pid": pid, "reason": "scrapes held the lock"})
                return removed
            for file in sorted(glob.glob(os.path.join(path, f"*_{pid}.db"))):
                name = os.path.basename(file)
                if not readable(file):
                    _log.warning("metrics_file_removed", extra={"file": name, "reason": "empty or truncated"})
                elif not _fold(path, file):
                    continue
                os.remove(file)
                removed.append(name)
    except Exception as error:
        # The files stay where they are and keep counting: a later scrape is still exact.
        _log.error("metrics_fold_failed", extra={"pid": pid, "error": f"{type(error).__name__}: {error}"})
    return removed
