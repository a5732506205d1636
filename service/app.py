"""Compatibility: ``from service.app import create_app`` (the factory lives in service.web.app)."""

from service.web.app import create_app

__all__ = ["create_app"]
