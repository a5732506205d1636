"""/metrics on its own port (METRICS_PORT), served by the gunicorn master over every worker's files.

The master never handles API traffic, so a scrape costs no worker thread and the app port can
answer 404 for /metrics. Standard library plus prometheus_client only: the master loads no Flask.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry
from prometheus_client import make_wsgi_app
from prometheus_client import multiprocess

#: Seconds a scrape connection may sit idle mid-request: a stalled client cannot pin a thread.
_IDLE_TIMEOUT = 10.0


class _Handler(WSGIRequestHandler):
    """No per-scrape log line (Prometheus calls every few seconds), and a socket deadline."""

    timeout = _IDLE_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib's name)
        """Stay quiet."""


class _Server(ThreadingMixIn, WSGIServer):
    """One daemon thread per scrape, so a slow scraper never blocks the next."""

    daemon_threads = True


class _Server6(_Server):
    """The same on an IPv6 address."""

    address_family = socket.AF_INET6


def _only_metrics(metrics_app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """Serve GET/HEAD /metrics; 404 for any other path, 405 for other methods."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"error":"not_found","error_description":"Only /metrics is served here."}']
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        return metrics_app(environ, start_response)

    return app


def start(host: str, port: int) -> WSGIServer:
    """Listen on host:port and serve the aggregated metrics from a daemon thread (raises OSError)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    server_class = _Server6 if ":" in host else _Server
    server = server_class((host, port), _Handler)
    server.set_app(_only_metrics(make_wsgi_app(registry)))
    # Workers are forked from this process: they must not keep the listening socket open.
    os.register_at_fork(after_in_child=server.socket.close)
    threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
    return server


def listen_host(address: Any) -> str:
    """The host of gunicorn's first bind address (metrics share the app's interface)."""
    if isinstance(address, tuple) and address and address[0]:
        return str(address[0])
    # A unix socket (or an empty host): every interface, like gunicorn's default for PORT.
    return "0.0.0.0"
