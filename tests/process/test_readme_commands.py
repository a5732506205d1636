"""The README's commands work as written: the one that runs gunicorn without bin/dev."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.process.test_bin_dev import listening_addresses
from tests.support.issuer import LocalIssuer
from tests.support.procs import REPO
from tests.support.procs import Server
from tests.support.procs import clean_env
from tests.support.procs import free_port

pytestmark = pytest.mark.slow

README = (REPO / "README.md").read_text()


def without_the_wrapper() -> str:
    """The command the README gives after "Without the wrapper" (a code span or an sh block)."""
    # An sh block right after the paragraph, else the paragraph's first code span.
    found = re.search(r"Without the\s+wrapper[^\n]*\n(?:[^\n]+\n)*\n```sh\n([^`]*)```", README) or re.search(
        r"Without the\s+wrapper[^`]*`([^`]+)`", README
    )
    assert found is not None, "no command after 'Without the wrapper'"
    (command,) = [line for line in found.group(1).splitlines() if line.strip()]
    return command


def test_the_command_without_the_wrapper_serves_tokens_of_the_dev_issuer_on_every_interface(
    tmp_path: Path,
) -> None:
    """As written (only the ports are free ones): no PATH lookup of gunicorn, settings included."""
    words = shlex.split(without_the_wrapper())
    assignments = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z0-9_]+=", w))
    argv = words[len(assignments):]
    with LocalIssuer(assignments.get("AUTH0_AUDIENCE", "https://api.dev.local")) as issuer:
        issuer_url = assignments.get("AUTH0_ISSUER", "").replace("127.0.0.1:3011", f"127.0.0.1:{issuer.port}")
        assert issuer_url == issuer.url, "the command names the dev issuer's default address"
        port = free_port()
        # A user's shell: the virtual environment is not on PATH.
        path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if ".venv" not in p)
        env = clean_env({**assignments, "AUTH0_ISSUER": issuer_url, "PORT": str(port), "PATH": path})
        out, err = tmp_path / "out", tmp_path / "err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=stdout, stderr=stderr,
                                    stdin=subprocess.DEVNULL)
        server = Server(proc, port, out, err, None, env)
        try:
            server.wait_ready(timeout=60)
            resp = server.get("/api/private", token=issuer.mint())
            assert resp.status == 200, (resp.status, resp.body[:300])
            assert listening_addresses(port) == {"00000000"}  # 0.0.0.0, as the README says
        finally:
            server.stop()
