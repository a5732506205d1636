"""The "Protect your own routes" example (docs/own-routes.md): a team's blueprint behind require_auth.

Kept as a real module so the test suite runs exactly the code the guide shows, in process
(``tests/unit/test_own_routes.py``) and under gunicorn (``tests.orders_example:create_app()``).
"""

from __future__ import annotations

from authlib.integrations.flask_oauth2 import current_token
from flask import Blueprint
from flask import Flask
from flask import jsonify

from service.app import create_app as create_service_app
from service.auth import require_auth
from service.config import Settings

orders = Blueprint("orders", __name__, url_prefix="/api/orders")


@orders.get("/<int:order_id>")
@require_auth("read:orders")
def get_order(order_id: int):
    """One order, for any token granting read:orders."""
    return jsonify(id=order_id, requested_by=current_token.sub)


@orders.post("")
@require_auth("read:orders write:orders", claims={"org_id": "org_123"})
def create_order():
    """Create an order: both permissions, and only for tokens of organisation org_123."""
    return jsonify(created=True, org=current_token.claims["org_id"]), 201


@orders.delete("/<int:order_id>")
@require_auth(["delete:orders", "admin"])
def delete_order(order_id: int):
    """Delete an order: delete:orders or admin, either suffices."""
    return jsonify(deleted=order_id)


@orders.post("/<int:order_id>/refund")
@require_auth("write:orders", acr_values=["urn:example:mfa"], max_age=300)
def refund_order(order_id: int):
    """Refund: write:orders, and a multi-factor login within the last 5 minutes (RFC 9470)."""
    return jsonify(refunded=order_id)


@orders.get("/feed")
@require_auth(optional=True)
def feed():
    """Public without a token, personalised with a valid one; an invalid token is still 401."""
    # current_token is a proxy: test its truth, never `is None` (the proxy itself is not None).
    if current_token:
        return jsonify(feed="yours", sub=current_token.sub)
    return jsonify(feed="public")


def create_app(settings: Settings | None = None) -> Flask:
    """The service's app with the orders blueprint registered (what ``service/routes.py`` would do)."""
    app = create_service_app(settings)
    app.register_blueprint(orders)
    return app
