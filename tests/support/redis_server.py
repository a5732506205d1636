"""A real redis-server (Debian's package) for tests: on a free loopback port, in a temp dir, no persistence.

Stopped by its PID, restartable on the same port (an outage followed by recovery), and pausable with
SIGSTOP: a paused server keeps its socket open and accepts connections, but answers nothing, which is
what a stuck or overloaded Redis looks like to a client. Without the binary the caller is skipped with
the reason, except under CI (``CI`` set), where the binary is required and its absence fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.procs import free_port

#: How long a start may take before the server counts as broken.
_START_TIMEOUT = 10.0


def redis_server_binary() -> str:
    """The redis-server path; skip the test when it is missing (fail under CI, which installs it)."""
    path = shutil.which("redis-server")
    if path is None:
        reason = "redis-server is not installed (apt-get install redis-server); CI installs it"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


class RedisServer:
    """One redis-server process the test owns: start, stop, pause, resume, restart."""

    def __init__(self, *, password: str | None = None, port: int | None = None) -> None:
        self.binary = redis_server_binary()
        self.port = port or free_port()
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="test-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self._clients: list[redis.Redis] = []

    @property
    def url(self) -> str:
        """redis://127.0.0.1:PORT/0 (no password in it)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The running server's PID, or None while it is stopped."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def _command(self) -> list[str]:
        """The command line: loopback only, no RDB or AOF, logging to a file in the temp dir."""
        cmd = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"),
        ]
        if self.password is not None:
            cmd += ["--requirepass", self.password]
        return cmd

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING."""
        assert self.pid is None, "already running"
        self.proc = subprocess.Popen(
            self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise AssertionError(f"redis-server exited {self.proc.returncode}: {err}{self.log()[-2000:]}")
            if self._answers_ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"redis-server silent for {_START_TIMEOUT}s\n{self.log()[-2000:]}")

    def _answers_ping(self) -> bool:
        """True once the server replies to an inline PING (+PONG, or -NOAUTH with a password)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64)[:1] in (b"+", b"-")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server by its PID (SIGKILL: an outage, not a shutdown; nothing is persisted)."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            if self.paused:
                proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
        self.paused = False

    def restart(self) -> RedisServer:
        """Start again on the same port, with an empty data set (as after a failover)."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, commands stay unanswered."""
        assert self.proc is not None and self.pid is not None, "not running"
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after pause()."""
        if self.proc is not None and self.paused:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def client(self) -> redis.Redis:
        """A redis-py client for the test's own inspection (keys, TTLs), closed by stop()."""
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=2,
            socket_connect_timeout=2,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
        )
        self._clients.append(client)
        return client

    def log(self) -> str:
        """The server's own log so far (for failure messages)."""
        path = self.dir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        """Stop the server and remove its temp dir."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
