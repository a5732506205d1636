"""The /metrics route on the app port (when METRICS_PORT does not move it to the master)."""

from __future__ import annotations

import os

from flask import Blueprint
from flask import Flask
from flask import Response
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import REGISTRY
from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest
from prometheus_client import multiprocess

from .. import metrics as definitions
from ..config import Settings

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition, aggregated over every worker when multiprocess."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # A fresh registry per scrape: the global one would show only this worker's share.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask, settings: Settings) -> None:
    """Register the /metrics endpoint and pre-create the always-present series."""
    # With METRICS_PORT, the gunicorn master serves /metrics (service.server.metrics_server) and
    # the app port answers 404 for it: clients never see denial reasons or pay for a scrape.
    if not settings.metrics_port:
        app.register_blueprint(bp)
    definitions.precreate(settings.version, settings.revision)
