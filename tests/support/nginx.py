"""Run Debian's nginx for a test: an ``http {}`` body in a temp dir, a free loopback port, stop by PID.

    with Nginx(tmp_path / "nginx") as nginx:
        nginx.start(f"server {{ listen 127.0.0.1:{nginx.port}; location / {{ return 204; }} }}")
        ...  # talk to nginx.url

``start`` skips the test (naming the package) where the binary is missing. The caller writes the
listeners, so TLS works the same way (``listen 127.0.0.1:{nginx.port} ssl;`` plus certificate
paths); ``extra_port()`` hands out more free ports for more listeners.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Mapping
from pathlib import Path

from tests.support.gateway_process import GatewayProcess
from tests.support.gateway_process import binary
from tests.support.gateway_process import free_port

_TEMPLATE_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render_template(text: str, values: Mapping[str, str]) -> str:
    """Substitute ``${NAME}`` for the given names only, as the nginx image's envsubst step does.

    The official image runs ``envsubst`` with the list of defined variables, so nginx's own
    ``$host`` or an unknown ``${OTHER}`` are left alone (docker-library/nginx
    docker-entrypoint.d/20-envsubst-on-templates.sh).
    """
    return _TEMPLATE_VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


class Nginx(GatewayProcess):
    """One nginx master (one worker) with its config, pid, logs and temp files in `workdir`."""

    name = "nginx"

    def extra_port(self) -> int:
        """Another free loopback port, for a second listener."""
        return free_port()

    def config(self, http_config: str) -> str:
        """The whole nginx.conf around `http_config` (what goes inside ``http {}``)."""
        d = self.dir
        # As root the master would switch workers to `nobody`, who cannot read a pytest temp dir.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        temp = "".join(
            f"    {kind}_temp_path {d}/tmp/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            f"{user}daemon off;\nmaster_process on;\nworker_processes 1;\n"
            f"pid {d}/nginx.pid;\nerror_log {d}/error.log info;\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            f"    access_log {d}/access.log;\n{temp}"
            "    default_type application/octet-stream;\n"
            f"{http_config}\n}}\n"
        )

    def write_config(self, http_config: str) -> Path:
        """Write nginx.conf and check it with ``nginx -t``."""
        path = self.dir / "nginx.conf"
        (self.dir / "tmp").mkdir(exist_ok=True)
        path.write_text(self.config(http_config))
        return path

    def start(self, http_config: str, *, timeout: float = 15.0) -> Nginx:
        """Write the config and run nginx in the foreground until ``self.port`` accepts."""
        exe = binary("nginx", "nginx")
        conf = self.write_config(http_config)
        self._spawn([exe, "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(conf)],
                    timeout=timeout)
        return self

    def reload(self, http_config: str, *, settle: float = 1.0) -> None:
        """Rewrite the config and SIGHUP the master (new workers take over within `settle` s)."""
        self.write_config(http_config)
        assert self.proc is not None and self.proc.poll() is None, "nginx is not running"
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(settle)

    def error_log(self) -> str:
        """What nginx wrote to its error log so far."""
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> str:
        """What nginx wrote to its access log so far."""
        path = self.dir / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""
