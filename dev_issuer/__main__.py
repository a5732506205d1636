"""Entry point: ``python -m dev_issuer`` runs the DEVELOPMENT issuer (never use in production)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from http import HTTPStatus
from types import FrameType

import structlog
from werkzeug.serving import WSGIRequestHandler
from werkzeug.serving import make_server

from dev_issuer.app import create_app
from dev_issuer.app import load_key
from dev_issuer.config import IssuerConfigError
from dev_issuer.config import IssuerSettings
from dev_issuer.tenants import with_extra_issuers

log = logging.getLogger("dev_issuer")
access_log = logging.getLogger("dev_issuer.access")


class _AccessLogHandler(WSGIRequestHandler):
    """Access lines without ANSI colours or the query string (clients may misplace secrets)."""

    #: JSON lines: the access line is an ``http_request`` event with fields, as the API's.
    structured = False

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log method, path and status of one request."""
        path = self.path.split("?", 1)[0]
        if isinstance(code, HTTPStatus):
            code = code.value
        if self.structured:
            fields = {"method": self.command, "path": path, "remote_addr": self.address_string()}
            status = int(code) if str(code).isdigit() else code
            access_log.info("http_request", extra={**fields, "status": status})
        else:
            access_log.info("%s %s %s %s", self.address_string(), self.command, path, code)


def _json_formatter() -> logging.Formatter:
    """One JSON object per line with the API's keys: event, level, logger, timestamp."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )


def _configure_logging() -> None:
    """Log to stdout, one line per event: JSON like the API's with LOG_FORMAT=json."""
    structured = os.environ.get("LOG_FORMAT", "").strip().lower() == "json"
    handler = logging.StreamHandler(sys.stdout)
    if structured:
        handler.setFormatter(_json_formatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    _AccessLogHandler.structured = structured
    # Authlib logs issued tokens at DEBUG; keep it above that whatever the root level becomes.
    logging.getLogger("authlib").setLevel(logging.INFO)


def main() -> int:
    """Run the issuer until SIGTERM/SIGINT; return the process exit status."""
    _configure_logging()
    try:
        settings = IssuerSettings.from_env(os.environ)
        key = load_key(settings)
    except IssuerConfigError as exc:
        print(f"dev_issuer: configuration error: {exc}", file=sys.stderr)
        return 2

    # Handlers go in before binding so an early SIGTERM still ends in a clean exit.
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        # shutdown() blocks until serve_forever returns, so it must run outside the serving thread.
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    app = with_extra_issuers(create_app(settings, key), settings)
    # make_server reports a busy or unusable address itself and exits with status 1.
    server = make_server(
        settings.host, settings.port, app, threaded=True, request_handler=_AccessLogHandler
    )

    log.warning("DEVELOPMENT ISSUER - not for production")
    log.info(
        "issuer=%s listening on %s:%s audiences=%s clients=%s kid=%s key=%s token_ttl=%ss",
        settings.issuer,
        settings.host,
        server.server_port,
        ",".join(settings.audiences),
        ",".join(c.client_id for c in settings.clients),
        key.kid,
        "file" if settings.key_file else "generated",
        settings.token_ttl,
    )
    for path in settings.extra_paths:
        log.info("issuer=%s%s/ (extra issuer, own key) on the same port", settings.issuer, path)

    serving = threading.Thread(target=server.serve_forever, name="dev-issuer", daemon=True)
    serving.start()
    while not stop.wait(1.0):
        if not serving.is_alive():
            log.error("server thread died")
            return 1
    log.info("shutting down")
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
