"""The layers of service/ import only downward: jose, then web and server, which never import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"
#: What each package must never import (absolute module prefixes).
FORBIDDEN = {
    "jose": ("flask", "werkzeug", "gunicorn", "flask_cors", "prometheus_client", "structlog",
             "service.web", "service.server", "service.logs", "service.metrics"),
    "web": ("gunicorn", "service.server"),
    "server": ("flask", "werkzeug", "flask_cors", "service.web", "service.auth", "service.app"),
}
#: Top-level shared modules (config, request ids, trace context, logs, metric definitions).
SHARED = ("config", "request_ids", "tracecontext", "logs", "metrics")


def _imports(path: Path) -> list[str]:
    """Every module a file imports, relative imports resolved to absolute names."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names.append(base)
            names.extend(f"{base}.{alias.name}" for alias in node.names)
    return names


def _violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in _imports(path)
        if any(name == bad or name.startswith(bad + ".") for bad in forbidden)
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(package: str) -> None:
    files = sorted((SERVICE / package).rglob("*.py"))
    assert files
    assert _violations(files, FORBIDDEN[package]) == []


@pytest.mark.parametrize("module", SHARED)
def test_the_shared_modules_import_no_layer_and_no_flask(module: str) -> None:
    forbidden = ("flask", "werkzeug", "gunicorn", "service.web", "service.server")
    # metrics may name the JWKS fetch event type for annotations only (under TYPE_CHECKING).
    assert _violations([SERVICE / f"{module}.py"], forbidden) == []


def test_the_gunicorn_master_loads_no_flask() -> None:
    """What gunicorn's master imports (worker and logger classes, metrics listener, pre-fork state)."""
    code = (
        "import sys\n"
        "import service.server.worker, service.server.gunicorn_logger, service.server.metrics_server\n"
        "import service.jose.prefork\n"
        "print(sorted(m for m in ('flask', 'werkzeug', 'authlib', 'joserfc') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
