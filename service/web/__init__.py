"""The Flask layer: app factory, composition root, ``require_auth``, routes and HTTP plumbing."""

from .app import create_app
from .protector import current_token
from .protector import require_auth

__all__ = ["create_app", "current_token", "require_auth"]
