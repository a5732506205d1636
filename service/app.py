"""The application factory: one ``init_app`` per concern, no I/O, safe to call before a fork."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from flask import Response
from flask import request
from flask_cors import CORS

from . import auth
from . import http
from . import logging
from . import metrics
from . import routes
from .config import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app from settings (read from the environment when not given)."""
    settings = settings if settings is not None else Settings.from_env()
    # Logging before Flask(): otherwise Flask attaches its own default handler.
    logging.configure(settings.log_format, settings.log_level)
    app = Flask(__name__)
    app.json.sort_keys = False
    http.init_app(app)
    auth.init_app(app, settings)
    metrics.init_app(app, settings)
    routes.init_app(app)
    # Browsers preflight with OPTIONS and no credentials: flask-cors answers it before any
    # auth check (the trap of express-oauth2-jwt-bearer #44).
    CORS(
        app,
        resources={r"/api/*": {"origins": list(settings.cors_origins)}},
        allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose_headers=["WWW-Authenticate", "X-Request-ID", "Retry-After"],
        max_age=600,
    )
    hooks = app.after_request_funcs[None]
    for index, hook in enumerate(hooks):
        if getattr(hook, "__name__", "") == "cors_after_request":
            hooks[index] = _only_cross_origin(hook)
    return app


def _only_cross_origin(cors_hook: Callable[[Response], Response]) -> Callable[[Response], Response]:
    """Run flask-cors's hook only for requests that carry an Origin (browsers' CORS requests).

    Without an Origin there is nothing for CORS to answer; skipping the hook saves its work on
    every server-to-server call. ``Vary: Origin`` keeps shared caches honest either way.
    """

    def after_request(response: Response) -> Response:
        if "HTTP_ORIGIN" in request.environ:
            return cors_hook(response)
        response.headers.add("Vary", "Origin")
        return response

    return after_request
