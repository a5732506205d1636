"""bin/dev as a new user runs it: dev issuer only by default, ready before gunicorn, stops on signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.issuer import LocalIssuer
from tests.support.procs import REPO
from tests.support.procs import Server
from tests.support.procs import clean_env
from tests.support.procs import free_port

pytestmark = pytest.mark.slow

# bin/dev's gunicorn gets this graceful timeout; a stop must end both processes within it.
GRACEFUL = 20


def _listening(port: int) -> bool:
    """True if something accepts connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _group_alive(pgid: int) -> bool:
    """True while any process of the group exists (zombies included: not yet reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def bin_dev(tmp_path: Path) -> Iterator:
    """Start bin/dev in its own process group with the given env; kill whatever is left after."""
    started: list[Server] = []

    def start(env: dict[str, str]) -> Server:
        port = free_port()
        out, err = tmp_path / "dev.out", tmp_path / "dev.err"
        full = clean_env({"PORT": str(port), "WEB_CONCURRENCY": "1", "LOG_FORMAT": "json",
                          "GUNICORN_GRACEFUL_TIMEOUT": str(GRACEFUL), **env})
        # A runner that starts the suite in the background (`cmd &`, nohup) leaves SIGINT ignored,
        # and an ignored signal stays ignored across exec: bash could not even trap it
        # (POSIX 2.11). A caught one is reset to the default on exec, as a terminal user has it.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with out.open("wb") as stdout, err.open("wb") as stderr:
                proc = subprocess.Popen(
                    [str(REPO / "bin" / "dev")], env=full, stdout=stdout, stderr=stderr,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )
        finally:
            signal.signal(signal.SIGINT, previous)
        server = Server(proc, port, out, err, None, full)
        started.append(server)
        return server

    yield start
    for server in started:
        if _group_alive(server.pid):
            os.killpg(server.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)


def _dev_token(issuer_port: int, audience: str) -> str:
    """The README's client-credentials request against the dev issuer."""
    body = json.dumps({"client_id": "dev-client", "client_secret": "dev-secret",
                       "audience": audience, "grant_type": "client_credentials"}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{issuer_port}/oauth/token", data=body,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)["access_token"]


def _stop(server: Server, sig: signal.Signals) -> float:
    """Send sig to bin/dev's pid only; return how long until its whole process group is gone."""
    sent = time.monotonic()
    os.kill(server.pid, sig)
    try:
        server.proc.wait(timeout=GRACEFUL + 10)
    except subprocess.TimeoutExpired:
        left = subprocess.run(["ps", "-o", "pid,stat,etime,args", "-g", str(server.pid)],
                              capture_output=True, text=True, check=False).stdout
        pytest.fail(f"bin/dev still running {GRACEFUL + 10} s after {sig.name}:\n{left}\n"
                    f"{server.output()[-3000:]}")
    while _group_alive(server.pid) and time.monotonic() - sent < GRACEFUL + 10:
        time.sleep(0.05)
    return time.monotonic() - sent


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_default_dev_issuer_mints_for_auth0_audience_as_soon_as_the_api_answers_and_stops_on_signal(
    bin_dev, sig: signal.Signals
) -> None:
    """Zero config: the token one-liner works the moment :PORT answers; a signal ends both."""
    issuer_port = free_port()
    audience = "https://custom.audience.test"
    server = bin_dev({"DEV_ISSUER_PORT": str(issuer_port), "AUTH0_AUDIENCE": audience})
    server.wait_ready(timeout=60)
    token = _dev_token(issuer_port, audience)
    resp = server.get("/api/private", token=token)
    assert resp.status == 200, (resp.status, resp.body[:300], server.output()[-2000:])
    out = server.stdout()
    assert out.index("listening on") < out.index("Starting gunicorn"), out[:2000]

    took = _stop(server, sig)
    assert not _group_alive(server.pid), f"processes left {took:.1f}s after {sig.name}"
    assert took < GRACEFUL, took
    assert not _listening(issuer_port), "dev issuer still listening"


@pytest.mark.parametrize("variable", ["AUTH0_ISSUER", "AUTH0_DOMAIN"])
def test_a_configured_tenant_starts_no_dev_issuer_and_gunicorn_replaces_bin_dev(
    bin_dev, issuer: LocalIssuer, variable: str
) -> None:
    """AUTH0_ISSUER or AUTH0_DOMAIN set: no dev issuer; bin/dev's pid is gunicorn itself."""
    issuer_port = free_port()
    tenant = {"AUTH0_ISSUER": issuer.url} if variable == "AUTH0_ISSUER" else {
        "AUTH0_DOMAIN": "tenant.example.invalid"}
    server = bin_dev({"DEV_ISSUER_PORT": str(issuer_port), "AUTH0_AUDIENCE": issuer.audience,
                      "AUTH0_HTTP_TIMEOUT": "1", **tenant})
    server.wait_ready(timeout=60)
    if variable == "AUTH0_ISSUER":
        resp = server.get("/api/private", token=issuer.mint())
        assert resp.status == 200, (resp.status, resp.body[:300])
    assert not _listening(issuer_port), "a dev issuer was started"
    assert "dev_issuer" not in server.output()
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
    assert any(part.endswith(b"gunicorn") for part in cmdline), cmdline
    assert _stop(server, signal.SIGTERM) < GRACEFUL


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on port, from /proc/net/tcp and tcp6 (hex)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: TCP_LISTEN
                found.add(address)
    return found


@pytest.mark.parametrize("tenant", [False, True], ids=["dev_issuer", "tenant"])
def test_bin_dev_listens_on_loopback_only(bin_dev, issuer: LocalIssuer, tenant: bool) -> None:
    """A development server: 127.0.0.1, never every interface, with or without the dev issuer."""
    env = {"AUTH0_ISSUER": issuer.url, "AUTH0_AUDIENCE": issuer.audience} if tenant else {
        "DEV_ISSUER_PORT": str(free_port())}
    server = bin_dev(env)
    server.wait_ready(timeout=60)
    assert listening_addresses(server.port) == {"0100007F"}, server.output()[-2000:]  # 127.0.0.1
    _stop(server, signal.SIGTERM)
