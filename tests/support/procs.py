"""Drive real gunicorn processes for tests: start, talk HTTP, read logs and metrics, stop."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from service.config import ENV_VARIABLES
from tests.support.issuer import LocalIssuer

REPO = Path(__file__).resolve().parents[2]
GUNICORN = REPO / ".venv" / "bin" / "gunicorn"

# Variables the service reads, stripped from the inherited environment so a developer's shell
# (or a sibling test) cannot leak configuration into the process under test; plus those gunicorn
# and prometheus_client read themselves, and the dev issuer's.
_STRIPPED_NAMES = ENV_VARIABLES | {"GUNICORN_CMD_ARGS", "prometheus_multiproc_dir"}
_STRIPPED_PREFIXES = ("DEV_ISSUER_",)


def free_port() -> int:
    """An unused loopback TCP port (small race window, acceptable for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The inherited environment minus service settings, plus `extra` (None values removed)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _STRIPPED_NAMES and not k.startswith(_STRIPPED_PREFIXES)
    }
    for name, value in (extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def service_env(
    issuer: LocalIssuer, metrics_dir: Path, extra: Mapping[str, str | None] | None = None
) -> dict[str, str]:
    """Environment for a service trusting `issuer`, with small, test-friendly timings."""
    base: dict[str, str | None] = {
        "AUTH0_ISSUER": issuer.url,
        "AUTH0_AUDIENCE": issuer.audience,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "AUTH0_HTTP_TIMEOUT": "2",
        "AUTH0_JWKS_COOLDOWN": "1",
        # Retry spacing after a failed fetch; short so recovery tests stay fast.
        "AUTH0_JWKS_RETRY": "1",
        "GUNICORN_GRACEFUL_TIMEOUT": "10",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
    }
    base.update(extra or {})
    return clean_env(base)


@dataclass
class Response:
    """A fully read HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        return self.headers.get(name.lower())


def http_get(
    port: int,
    path: str,
    *,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    timeout: float = 15.0,
) -> Response:
    """One request on a fresh connection (so gunicorn can hand it to any worker)."""
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    hdrs.setdefault("Connection", "close")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.monotonic()
    try:
        conn.request(method, path, headers=hdrs)
        resp = conn.getresponse()
        body = resp.read()
        return Response(
            status=resp.status,
            # Repeated fields (two WWW-Authenticate challenges) joined as http.client and
            # requests do (RFC 9110 §5.3).
            headers={k.lower(): resp.getheader(k) or "" for k, _ in resp.getheaders()},
            body=body,
            elapsed=time.monotonic() - started,
        )
    finally:
        conn.close()


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample in a Prometheus text exposition as (name, labels, value)."""
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def metric_sum(samples: Iterable[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    return sum(
        value
        for sname, slabels, value in samples
        if sname == name and all(slabels.get(k) == v for k, v in labels.items())
    )


def read_json_lines(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse a log file: (JSON object records, lines that are not JSON objects)."""
    records: list[dict[str, Any]] = []
    bad: list[str] = []
    if not path.exists():
        return records, bad
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            bad.append(line)
            continue
        if isinstance(obj, dict):
            records.append(obj)
        else:
            bad.append(line)
    return records, bad


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (the gunicorn workers of a master), from /proc."""
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            children.append(int(entry.name))
    return sorted(children)


def _has_loaded_app(pid: int) -> bool:
    """True once the process has the cryptography extension mapped (it imported the service)."""
    try:
        return "cryptography" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@dataclass
class Server:
    """A running gunicorn master started by start_server()."""

    proc: subprocess.Popen[bytes]
    port: int
    stdout_path: Path
    stderr_path: Path
    metrics_dir: Path | None
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    returncode: int | None = None

    @property
    def pid(self) -> int:
        """The master's pid."""
        return self.proc.pid

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    def send_raw(self, data: bytes) -> bytes:
        """Send bytes as-is on a fresh connection (malformed HTTP); return all until it closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(data)
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
        return received

    def get(self, path: str, **kwargs: Any) -> Response:
        """GET (or kwargs['method']) on this server."""
        return http_get(self.port, path, **kwargs)

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        """Scrape and parse /metrics (asserting it answers 200)."""
        resp = self.get("/metrics")
        assert resp.status == 200, (resp.status, resp.body[:500])
        return parse_metrics(resp.body.decode())

    def per_worker(self, sample: str, **labels: str) -> dict[int, float]:
        """One counter sample's value in each live worker, read from its multiprocess file."""
        assert self.metrics_dir is not None, "server runs without a known multiproc dir"
        out: dict[int, float] = {}
        for pid in self.workers():
            out[pid] = 0.0
            path = self.metrics_dir / f"counter_{pid}.db"
            # A worker creates its file empty, then sizes it: until then it holds no counts.
            if not path.exists() or path.stat().st_size < 8:
                continue
            # prometheus_client's public reader merges a directory: give it this worker's file alone.
            with tempfile.TemporaryDirectory() as alone:
                shutil.copy(path, alone)
                for family in MultiProcessCollector(None, path=alone).collect():
                    for found in family.samples:
                        if found.name == sample and all(
                            found.labels.get(k) == v for k, v in labels.items()
                        ):
                            out[pid] += found.value
        return out

    def workers(self) -> list[int]:
        """Current worker pids."""
        return child_pids(self.pid)

    def wait_workers(self, n: int, timeout: float = 15.0) -> list[int]:
        """Wait until the master has exactly n live workers."""
        deadline = time.monotonic() + timeout
        pids = self.workers()
        while time.monotonic() < deadline:
            pids = self.workers()
            if len(pids) == n:
                return pids
            time.sleep(0.05)
        raise AssertionError(f"expected {n} workers, have {pids}\n{self.output()[-3000:]}")

    def stdout(self) -> str:
        """Everything the process wrote to stdout so far."""
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def output(self) -> str:
        """stdout then stderr, for failure messages and secret scans."""
        return self.stdout() + self.stderr()

    def records(self) -> list[dict[str, Any]]:
        """JSON log records written to stdout so far."""
        return read_json_lines(self.stdout_path)[0]

    def wait_for_record(
        self, predicate: Any, *, timeout: float = 5.0, count: int = 1
    ) -> list[dict[str, Any]]:
        """Poll stdout until at least `count` records satisfy predicate; return them."""
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = [r for r in self.records() if predicate(r)]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        return found

    def alive(self) -> bool:
        """True while the master runs."""
        return self.proc.poll() is None

    def wait_booted(self, n: int, timeout: float = 20.0) -> list[int]:
        """Wait until n workers exist and each has loaded the app.

        The first booted worker answers /healthz while its siblings are still importing; until
        they finish it takes every connection, so multi-worker tests would not spread. A worker
        has loaded the app once the cryptography extension (joserfc's backend) is mapped.
        """
        deadline = time.monotonic() + timeout
        pids: list[int] = []
        while time.monotonic() < deadline:
            pids = self.workers()
            if len(pids) == n and all(_has_loaded_app(pid) for pid in pids):
                return pids
            time.sleep(0.05)
        raise AssertionError(f"{n} workers not booted in {timeout}s: {pids}\n{self.output()[-3000:]}")

    def wait_ready(self, path: str = "/healthz", timeout: float = 20.0) -> None:
        """Poll `path` until 200; fail early (with the output) if the master exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                tail = self.output()[-4000:]
                raise AssertionError(f"gunicorn exited {self.returncode} before {path}\n{tail}")
            try:
                if self.get(path, timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{path} not 200 within {timeout}s\n{self.output()[-4000:]}")

    def signal(self, sig: int) -> None:
        """Send a signal to the master."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code (kills and fails on timeout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"gunicorn ignored SIGTERM for {timeout}s") from None
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the master and its workers (cleanup path only)."""
        for pid in self.workers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.returncode = self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Best-effort shutdown for fixture teardown."""
        if self.proc.poll() is None:
            try:
                self.terminate(timeout=25)
            except AssertionError:
                pass
        else:
            self.returncode = self.proc.wait()


def launch(
    env: Mapping[str, str],
    *,
    log_dir: Path,
    args: Iterable[str] = (),
    port: int | None = None,
    workers: int | None = 2,
    bind: bool = True,
) -> Server:
    """Start `gunicorn -c gunicorn.conf.py` from the repo root without waiting for it."""
    port = port or free_port()
    cmd = [str(GUNICORN), "-c", "gunicorn.conf.py"]
    if bind:
        cmd += ["--bind", f"127.0.0.1:{port}"]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    cmd += list(args)
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{port}-{time.monotonic_ns()}"
    out_path = log_dir / f"gunicorn-{stamp}.out"
    err_path = log_dir / f"gunicorn-{stamp}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=dict(env), stdout=out, stderr=err, stdin=subprocess.DEVNULL
        )
    metrics_dir = env.get("PROMETHEUS_MULTIPROC_DIR")
    return Server(
        proc=proc,
        port=port,
        stdout_path=out_path,
        stderr_path=err_path,
        metrics_dir=Path(metrics_dir) if metrics_dir else None,
        env=dict(env),
        args=cmd,
    )


def run_to_exit(
    env: Mapping[str, str], *, log_dir: Path, args: Iterable[str] = (), timeout: float = 30.0
) -> tuple[int, str, str]:
    """Run gunicorn expecting it to exit on its own; returns (code, stdout, stderr)."""
    server = launch(env, log_dir=log_dir, args=args)
    try:
        code = server.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.kill()
        raise AssertionError(f"gunicorn still running after {timeout}s\n{server.output()[-4000:]}") from None
    return code, server.stdout(), server.stderr()


class ServerFactory:
    """Starts gunicorn servers against an issuer and stops them all at teardown."""

    def __init__(self, base: Path) -> None:
        """Keep logs and multiproc dirs under `base`."""
        self.base = base
        self.servers: list[Server] = []
        self._n = 0

    def metrics_dir(self) -> Path:
        """A fresh, empty directory for PROMETHEUS_MULTIPROC_DIR."""
        self._n += 1
        path = self.base / f"prom-{self._n}"
        path.mkdir(parents=True)
        return path

    def __call__(
        self,
        issuer: LocalIssuer,
        *,
        workers: int | None = 2,
        env: Mapping[str, str | None] | None = None,
        args: tuple[str, ...] = (),
        wait: bool = True,
        metrics_dir: Path | None = None,
    ) -> Server:
        """Start one server trusting `issuer`; by default wait for /healthz."""
        full_env = service_env(issuer, metrics_dir or self.metrics_dir(), env)
        server = launch(full_env, log_dir=self.base / "logs", args=args, workers=workers)
        self.servers.append(server)
        if wait:
            server.wait_ready()
            if workers is not None:
                server.wait_booted(workers)
        return server

    def close(self) -> None:
        """Stop every server that is still running."""
        for server in self.servers:
            server.stop()
