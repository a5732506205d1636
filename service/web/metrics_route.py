"""The /metrics route on the app port (when METRICS_PORT does not move it to the master)."""

from __future__ import annotations

import functools
import os

from flask import Blueprint
from flask import Flask
from flask import Response
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import REGISTRY
from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest

from .. import metrics as definitions
from ..config import Settings
from ..metric_files import FileCollector

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition, aggregated over every worker when multiprocess."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    # The global registry would show only this worker's share.
    registry = _files_registry(path) if path else REGISTRY
    return Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE_LATEST)


@functools.lru_cache(maxsize=1)
def _files_registry(path: str) -> CollectorRegistry:
    """A registry over every worker's files, made once per worker (it logs each skipped file once)."""
    registry = CollectorRegistry()
    registry.register(FileCollector(path))
    return registry


def init_app(app: Flask, settings: Settings) -> None:
    """Register the /metrics endpoint and pre-create the always-present series."""
    # With METRICS_PORT, the gunicorn master serves /metrics (service.server.metrics_server) and
    # the app port answers 404 for it: clients never see denial reasons or pay for a scrape.
    if not settings.metrics_port:
        app.register_blueprint(bp)
    definitions.precreate(settings.version, settings.revision)
