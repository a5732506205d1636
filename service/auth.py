"""Compatibility: ``from service.auth import require_auth, current_token`` (see service.web.protector)."""

from service.web.composition import start_key_fetch
from service.web.protector import Protector
from service.web.protector import current_token
from service.web.protector import require_auth

__all__ = ["Protector", "current_token", "require_auth", "start_key_fetch"]
