"""Run a gateway binary (nginx, Caddy) for a test: config in a temp dir, loopback port, stop by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    """An unused loopback TCP port (small race window, acceptable for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binary(name: str, package: str) -> str:
    """The binary's path; skip the test naming the Debian package (fail under CI, which installs it)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        reason = f"{name} is not installed (apt-get install {package}); CI installs it"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


class GatewayProcess:
    """One gateway process in its own session: start, wait for its port, stop by PID."""

    #: What the subclass calls itself in failure messages.
    name = "gateway"

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        """Keep config and logs in `workdir`; listen on `port` (a free one by default)."""
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdout_path = self.dir / "stdout.log"
        self.stderr_path = self.dir / "stderr.log"

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT (the main listener)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The main process's PID."""
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def output(self) -> str:
        """stdout, stderr and any log files the gateway wrote, for failure messages."""
        parts = []
        for path in sorted(self.dir.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def _spawn(self, cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 15.0) -> None:
        """Start `cmd` in a new session and wait until the port accepts connections."""
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                cmd, cwd=self.dir, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited {self.proc.returncode} at start\n{self.output()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"{self.name} not listening on {self.port} within {timeout}s\n{self.output()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process (its session on timeout) and wait; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill_session()
        return self.proc.returncode

    def _kill_session(self) -> None:
        """SIGKILL the process group this harness started (its leader is not reaped yet, so the
        group id is still ours), then reap the leader."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def __enter__(self) -> GatewayProcess:
        """Use as a context manager to stop on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the process."""
        self.stop()
