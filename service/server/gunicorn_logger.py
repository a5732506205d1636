"""gunicorn's logger: its own lines as JSON on stdout (through service.logs), and the access line."""

from __future__ import annotations

import os
from typing import Any

from gunicorn.glogging import Logger as _GunicornBaseLogger

from ..config import log_settings
from ..logs import RequestLine
from ..logs import clip
from ..logs import configure
from ..logs import stdout_handler
from ..request_ids import ORIGINAL_REQUEST_ENVIRON_KEY
from ..request_ids import REQUEST_ID_ENVIRON_KEY
from ..request_ids import ROUTE_ENVIRON_KEY
from ..request_ids import SERVER_REQUEST_ID_ENVIRON_KEY
from ..request_ids import TRACE_ENVIRON_KEY

#: Routes whose 2xx access lines are left out unless LOG_ACCESS_PROBES=1 (kubelet and
#: Prometheus call them every few seconds; a failure there is always logged).
PROBE_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


class GunicornLogger(_GunicornBaseLogger):
    """gunicorn's logger: its own lines as JSON on stdout, and a structured access line."""

    _access_probes = False

    def setup(self, cfg: Any) -> None:
        """Let gunicorn set levels, then route its loggers through our stdout handler."""
        super().setup(cfg)
        # gunicorn.conf.py has already refused an invalid LOG_* setting (exit 78) by now.
        settings = log_settings(os.environ)
        configure(settings)
        self._access_probes = settings.access_probes
        handler = stdout_handler(settings.format)
        for log in (self.error_log, self.access_log):
            for old in list(log.handlers):
                log.removeHandler(old)
            log.addHandler(handler)
        self._access = RequestLine("gunicorn.access")

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        """Emit one ``http_request`` line carrying the request's id (read back from environ).

        It is rendered directly (service.logs.RequestLine) rather than through stdlib logging:
        this line is written for every request, so it is the hottest log call in the service. Path and
        User-Agent are the client's text: cut to MAX_LOGGED_CHARS (the method is a token of at
        most 20 characters by gunicorn's parser, the request id is checked by service.web.request_hooks).
        """
        if not self.access_log_enabled:
            return
        status = int(getattr(resp, "status_code", None) or str(resp.status).split(None, 1)[0])
        route = environ.get(ROUTE_ENVIRON_KEY)
        if route in PROBE_ROUTES and 200 <= status < 300 and not self._access_probes:
            return
        extra: dict[str, str | None] = {}
        # Only present when the client chose the request id (service.web.request_hooks).
        server_id = environ.get(SERVER_REQUEST_ID_ENVIRON_KEY)
        if server_id is not None:
            extra["server_request_id"] = server_id
        # Only present when the request carried a valid traceparent (service.tracecontext).
        trace = environ.get(TRACE_ENVIRON_KEY)
        if trace is not None:
            extra["trace_id"], extra["span_id"] = trace
        path: str | None = environ.get("PATH_INFO")
        # Only present on a gateway decision (service.web.gateway): the request it was about,
        # its path without the query (a query may carry secrets); `path` is the decision endpoint.
        original = environ.get(ORIGINAL_REQUEST_ENVIRON_KEY)
        if original is not None:
            extra["original_method"], original_path = original
            extra["original_path"] = clip(original_path)
            path = "/auth/check"
        self._access.info(
            "http_request",
            request_id=environ.get(REQUEST_ID_ENVIRON_KEY),
            method=environ.get("REQUEST_METHOD"),
            path=clip(path),
            route=route,
            status=status,
            duration_ms=round(request_time.total_seconds() * 1000.0, 3),
            remote_addr=environ.get("REMOTE_ADDR"),
            user_agent=clip(environ.get("HTTP_USER_AGENT")),
            bytes=getattr(resp, "sent", None),
            **extra,
        )
