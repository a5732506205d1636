"""Run Debian's Caddy for a test: a Caddyfile in a temp dir, a free loopback port, stop by PID.

    with Caddy(tmp_path / "caddy") as caddy:
        caddy.start(f"http://127.0.0.1:{caddy.port} {{\\n respond 204\\n}}")
        ...  # talk to caddy.url

``start`` skips the test (naming the package) where the binary is missing. The harness puts a
global options block first (admin endpoint off, no automatic HTTPS, loopback only) and keeps Caddy's data and
config directories in the temp dir; ``env`` fills the Caddyfile's ``{$NAME}`` placeholders.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from tests.support.gateway_process import GatewayProcess
from tests.support.gateway_process import binary

#: Global options for a test: no admin listener on :2019 (a fixed port), no certificates, and
#: sites such as ``:PORT`` listen on loopback only.
GLOBAL_OPTIONS = ("admin off", "auto_https off", "default_bind 127.0.0.1")


class Caddy(GatewayProcess):
    """One ``caddy run`` with its Caddyfile, data and config in `workdir`."""

    name = "caddy"

    def caddyfile(self, site_blocks: str, global_options: tuple[str, ...] = GLOBAL_OPTIONS) -> str:
        """The whole Caddyfile: the global options block, then the caller's site blocks."""
        if site_blocks.lstrip().startswith("{"):
            raise ValueError("pass global options as `global_options`: a Caddyfile has one such block")
        options = "".join(f"\t{line}\n" for line in global_options)
        return f"{{\n{options}}}\n\n{site_blocks}\n"

    def start(
        self,
        site_blocks: str,
        *,
        env: Mapping[str, str] | None = None,
        global_options: tuple[str, ...] = GLOBAL_OPTIONS,
        timeout: float = 15.0,
    ) -> Caddy:
        """Write the Caddyfile and ``caddy run`` it until ``self.port`` accepts."""
        exe = binary("caddy", "caddy")
        path = self.dir / "Caddyfile"
        path.write_text(self.caddyfile(site_blocks, global_options))
        full_env = {
            **os.environ,
            # Caddy writes its storage and autosaved config under these: keep them in the temp dir.
            "HOME": str(self.dir),
            "XDG_DATA_HOME": str(self.dir / "data"),
            "XDG_CONFIG_HOME": str(self.dir / "config"),
            **(env or {}),
        }
        self._spawn([exe, "run", "--config", str(path), "--adapter", "caddyfile"], env=full_env,
                    timeout=timeout)
        return self
