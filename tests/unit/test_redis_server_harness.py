"""The redis-server harness does what the replay-store tests rely on: stop, pause and restart."""

from __future__ import annotations

import socket

import pytest
import redis

from tests.support.redis_server import RedisServer


def test_starts_on_loopback_without_persistence() -> None:
    with RedisServer() as server:
        client = server.client()
        assert client.ping()
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("bind")["bind"] == "127.0.0.1"
    assert server.pid is None and not server.dir.exists()


def test_pause_leaves_commands_unanswered_and_resume_answers() -> None:
    with RedisServer() as server:
        server.pause()
        # The kernel still accepts the connection: only the answer never comes.
        with socket.create_connection(("127.0.0.1", server.port), timeout=1) as sock:
            sock.settimeout(0.2)
            sock.sendall(b"PING\r\n")
            with pytest.raises(TimeoutError):
                sock.recv(16)
        server.resume()
        assert server.client().ping()


def test_stop_refuses_connections_and_restart_uses_the_same_port_empty() -> None:
    with RedisServer() as server:
        port = server.port
        server.client().set("k", "1")
        server.stop()
        with pytest.raises(redis.ConnectionError):
            server.client().ping()
        server.start()
        assert server.port == port
        assert server.client().get("k") is None


def test_password_is_required_when_set() -> None:
    with RedisServer(password="s3cret") as server:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2).ping()
        assert server.client().ping()
