"""An app with a ``<path:...>`` route behind require_auth: dot segments in a path stay in its value.

Served by gunicorn as ``tests.support.files_example:create_app()`` (and in process), so that a request
for ``/api/files/../private`` reaches a protected view, as on a team's own routes.
"""

from __future__ import annotations

from flask import Blueprint
from flask import Flask
from flask import jsonify

from service.app import create_app as create_service_app
from service.auth import require_auth
from service.config import Settings

files = Blueprint("files", __name__, url_prefix="/api/files")


@files.get("/<path:name>")
@require_auth()
def get_file(name: str):
    """One file by name, for any valid token."""
    return jsonify(name=name)


def create_app(settings: Settings | None = None) -> Flask:
    """The service's app with the files blueprint registered."""
    app = create_service_app(settings)
    app.register_blueprint(files)
    return app
