"""The nginx and Caddy harnesses start the Debian binaries on loopback and stop them by PID."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.caddy import Caddy
from tests.support.nginx import Nginx
from tests.support.nginx import render_template
from tests.support.procs import http_get

pytestmark = pytest.mark.slow


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_nginx_serves_the_callers_config_and_stops_with_its_workers(tmp_path: Path) -> None:
    with Nginx(tmp_path / "nginx") as nginx:
        nginx.start(f"server {{ listen 127.0.0.1:{nginx.port}; location / {{ return 204; }} }}")
        assert http_get(nginx.port, "/").status == 204
        pid = nginx.pid
    assert nginx.proc is not None and nginx.proc.returncode == 0
    assert _gone(pid)


def test_nginx_reload_applies_the_new_config(tmp_path: Path) -> None:
    with Nginx(tmp_path / "nginx") as nginx:
        nginx.start(f"server {{ listen 127.0.0.1:{nginx.port}; location / {{ return 204; }} }}")
        nginx.reload(f"server {{ listen 127.0.0.1:{nginx.port}; location / {{ return 202; }} }}")
        assert http_get(nginx.port, "/").status == 202


def test_nginx_bad_config_fails_at_start_with_the_error(tmp_path: Path) -> None:
    with Nginx(tmp_path / "nginx") as nginx, pytest.raises(AssertionError, match="unknown directive"):
        nginx.start("no_such_directive on;")


def test_render_template_substitutes_only_the_named_variables() -> None:
    text = "proxy_pass ${UPSTREAM}; set $x $host; ${OTHER}"
    assert render_template(text, {"UPSTREAM": "http://a"}) == "proxy_pass http://a; set $x $host; ${OTHER}"


def test_caddy_serves_the_callers_site_with_env_placeholders(tmp_path: Path) -> None:
    with Caddy(tmp_path / "caddy") as caddy:
        caddy.start(f"http://127.0.0.1:{caddy.port} {{\n\trespond {{$ANSWER}} 200\n}}", env={"ANSWER": "hi"})
        resp = http_get(caddy.port, "/")
        assert (resp.status, resp.body) == (200, b"hi")
        pid = caddy.pid
    assert _gone(pid)
