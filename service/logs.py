"""Structured logging: one JSON object per line on stdout, for our events and gunicorn's alike.

Our own events go straight through structlog to stdout (the fast path: no stdlib hop); stdlib
records (gunicorn.error, gunicorn.access, libraries) are rendered by structlog's
``ProcessorFormatter`` bridge so every line has the same shape. Tokens and Authorization headers
are never passed to a logger anywhere in the service.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

from .config import LogSettings

#: Longest client-supplied text a log line carries (request path, User-Agent, third-party messages
#: that quote a request, exception messages): one request must not be able to write a huge line.
MAX_LOGGED_CHARS = 1024
#: Appended to a value cut at MAX_LOGGED_CHARS.
TRUNCATED = "...[truncated]"

_configured: LogSettings | None = None
#: Where per-request lines go when they are rendered directly (JSON at info level), else None.
_direct: structlog.WriteLogger | None = None


def _timestamper() -> structlog.processors.TimeStamper:
    """ISO-8601 UTC timestamps under the ``timestamp`` key."""
    return structlog.processors.TimeStamper(fmt="iso", utc=True)


def _renderer(log_format: str) -> Any:
    """JSON for machines, a console renderer for people."""
    if log_format == "console":
        return structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    return structlog.processors.JSONRenderer(serializer=_orjson_text)


def _orjson_text(obj: Any, default: Any = None, **_kw: Any) -> str:
    """orjson, returned as str: ProcessorFormatter and WriteLogger both need text.

    orjson gives bytes, which only structlog's BytesLogger takes
    (https://www.structlog.org/en/stable/performance.html).
    """
    return orjson.dumps(obj, default=default).decode()


def clip(value: str | None) -> str | None:
    """A client-supplied value, cut to MAX_LOGGED_CHARS (and marked) when longer."""
    if value is None or len(value) <= MAX_LOGGED_CHARS:
        return value
    return value[:MAX_LOGGED_CHARS] + TRUNCATED


def _clip_exceptions(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Cut exception messages, which can quote client input, like any client-supplied text."""
    for exc in event.get("exception") or ():
        if isinstance(exc, dict) and isinstance(exc.get("exc_value"), str):
            exc["exc_value"] = clip(exc["exc_value"])
    return event


def _logger_key(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Expose the bound logger name under the same ``logger`` key stdlib records use."""
    name = event.pop("logger_name", None)
    if name is not None:
        event["logger"] = name
    return event


#: Tracebacks as data, without local variables: locals could hold a token.
_tracebacks = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


#: What both chains (our events, stdlib records) do first, as warehouse's logging.py shares them.
SHARED_PROCESSORS: tuple[Any, ...] = (
    # Request-scoped fields (request_id, trace_id, ...) bound per request in service.web.request_hooks.
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    _timestamper(),
)


def _rendering(log_format: str) -> list[Any]:
    """What both chains do last: tracebacks as data, cut to size, then one line of text."""
    return [_tracebacks, _clip_exceptions, _renderer(log_format)]


def configure(settings: LogSettings) -> None:
    """Configure structlog and the stdlib root logger once per process (idempotent)."""
    global _configured, _direct
    if _configured == settings:
        return
    _configured = settings
    numeric_level = logging.getLevelNamesMapping().get(settings.level.upper(), logging.INFO)
    # structlog's WriteLogger: it writes under structlog's own lock for this file.
    direct = settings.format != "console" and numeric_level <= logging.INFO
    _direct = structlog.WriteLogger(file=sys.stdout) if direct else None
    structlog.configure(
        # Our own events: straight to stdout, named by the bound logger.
        processors=[*SHARED_PROCESSORS, _logger_key, *_rendering(settings.format)],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        # Cached loggers skip re-assembling the chain on every call (structlog docs, performance).
        cache_logger_on_first_use=True,
    )
    handler = stdout_handler(settings.format)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_service", False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)


#: What a credential looks like inside someone else's message (gunicorn echoes rejected request
#: lines and headers verbatim): a JWT, a Bearer/Basic value, or the Authorization header's name.
_CREDENTIALS = re.compile(
    r"eyJ[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]*)*|(?:bearer|basic)\s*[^\s'\",]*|authorization",
    re.IGNORECASE,
)


def _redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Blank out credentials in third-party log messages, then cut them to MAX_LOGGED_CHARS.

    Our own events never carry credentials; gunicorn's warnings quote rejected requests.
    """
    message = event.get("event")
    if isinstance(message, str):
        if _CREDENTIALS.search(message):
            message = _CREDENTIALS.sub("[redacted]", message)
        event["event"] = clip(message)
    return event


def stdout_handler(log_format: str) -> logging.Handler:
    """A stdout handler that renders stdlib records through structlog."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # Stdlib records (gunicorn, libraries): their name and `extra=`, credentials blanked.
            foreign_pre_chain=[
                *SHARED_PROCESSORS,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                _redact,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *_rendering(log_format),
            ],
        )
    )
    handler._service = True  # type: ignore[attr-defined]
    return handler


_stamp = _timestamper()


class RequestLine:
    """The per-request events (access line, ``auth_decision``), rendered as the chain renders them.

    Written on every request, these have flat text and number fields only, so the JSON line is
    built here in one step: the event's fields, ``event``, the request's context variables, then
    ``level``, ``timestamp`` and ``logger`` (the keys and order structlog's chain above gives,
    orjson's rendering), written through structlog's WriteLogger. Console format, or a level
    above info, goes through structlog unchanged.
    """

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger = get_logger(name)

    def info(self, event: str, **fields: Any) -> None:
        """Write one info line with these fields (structlog's ``log.info(event, **fields)``)."""
        direct = _direct
        if direct is None:
            self._logger.info(event, **fields)
            return
        fields["event"] = event
        for key, value in structlog.contextvars.get_contextvars().items():
            fields.setdefault(key, value)
        fields["level"] = "info"
        _stamp(None, "info", fields)
        fields["logger"] = self._name
        direct.msg(orjson.dumps(fields, default=repr).decode())


def get_logger(name: str) -> Any:
    """A structlog logger whose lines carry ``logger=name``."""
    # "logger" itself is a reserved keyword of structlog.get_logger; renamed by _logger_key.
    return structlog.get_logger(logger_name=name)
