"""The sample upstream (deploy/gateway/echo/echo.py) as a real process on loopback for a test."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.support.gateway_process import GatewayProcess

ECHO = Path(__file__).resolve().parents[2] / "deploy" / "gateway" / "echo" / "echo.py"


class EchoUpstream(GatewayProcess):
    """``python echo.py PORT 127.0.0.1``: answers with the method, path and headers it received."""

    name = "echo upstream"

    def start(self, timeout: float = 15.0) -> EchoUpstream:
        """Run the echo server until its port accepts."""
        self._spawn([sys.executable, str(ECHO), str(self.port), "127.0.0.1"], timeout=timeout)
        return self


def echoed_headers(body: bytes) -> dict[str, Any]:
    """The headers an echo response says the upstream received (names lower-case)."""
    return dict(json.loads(body)["headers"])
