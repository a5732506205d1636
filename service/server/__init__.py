"""The gunicorn layer: hardened worker, request-head scanner, logger and the master's metrics listener.

``gunicorn.conf.py`` names ``service.server.worker.Worker`` and
``service.server.gunicorn_logger.GunicornLogger``; nothing here imports Flask.
"""

from .gunicorn_logger import GunicornLogger
from .worker import Worker

__all__ = ["GunicornLogger", "Worker"]
