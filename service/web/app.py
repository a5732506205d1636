"""The application factory: one ``init_app`` per concern, no I/O, safe to call before a fork."""

from __future__ import annotations

from collections.abc import Callable
from types import FunctionType
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from .. import logs
from ..config import Settings
from ..jose.clock import SYSTEM
from ..jose.clock import Clock
from ..jose.prefork import Prefork
from . import composition
from . import cors
from . import gateway
from . import metrics_route
from . import request_hooks
from . import resource_metadata
from . import routes


def create_app(
    settings: Settings | None = None, *, prefork: Prefork | None = None, clock: Clock = SYSTEM
) -> Flask:
    """Build the Flask app from settings (read from the environment when not given).

    ``prefork``: what a gunicorn master made before forking (by default, what it handed over).
    ``clock``: what token lifetimes and key-set lifetimes are measured on (tests move one by hand).
    """
    settings = settings if settings is not None else Settings.from_env()
    # Logging before Flask(): otherwise Flask attaches its own default handler.
    logs.configure(settings.log)
    app = ServiceFlask(__name__)
    if isinstance(app.json, DefaultJSONProvider):  # always, unless a subclass replaces it
        app.json.sort_keys = False
    request_hooks.init_app(app)
    state = composition.init_app(app, settings, prefork, clock)
    metrics_route.init_app(app, settings)
    routes.init_app(app)
    cors.init_app(app, settings)
    resource_metadata.init_app(app)
    gateway.init_app(app, state.gateway)
    return app


class ServiceFlask(Flask):
    """Flask, deciding once per view or hook whether it is a coroutine function."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Flask's documented override point, memoised for plain functions.

        Flask inspects every hook and view on every request (``inspect.iscoroutinefunction``);
        ours never change after start-up. Bound methods are created anew on each access, so they
        are passed through rather than remembered (the dict stays bounded by the app's functions).
        https://flask.palletsprojects.com/en/stable/api/#flask.Flask.ensure_sync
        """
        if type(func) is not FunctionType:
            return super().ensure_sync(func)
        found = self._sync.get(func)
        if found is None:
            found = self._sync[func] = super().ensure_sync(func)
        return found

