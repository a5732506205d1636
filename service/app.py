"""The application factory: one ``init_app`` per concern, no I/O, safe to call before a fork."""

from __future__ import annotations

from flask import Flask

from . import auth
from . import cors
from . import http
from . import logging
from . import metrics
from . import resource_metadata
from . import routes
from .config import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app from settings (read from the environment when not given)."""
    settings = settings if settings is not None else Settings.from_env()
    # Logging before Flask(): otherwise Flask attaches its own default handler.
    logging.configure(settings.log)
    app = Flask(__name__)
    app.json.sort_keys = False
    http.init_app(app)
    auth.init_app(app, settings)
    metrics.init_app(app, settings)
    routes.init_app(app)
    cors.init_app(app, settings)
    resource_metadata.init_app(app, settings)
    return app

