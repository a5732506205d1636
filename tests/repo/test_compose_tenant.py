"""docker-compose.yml: a tenant in .env (or the shell) never leaves the dev issuer trusted.

Renders the real compose file with `docker compose config` (and podman-compose where present;
neither needs a container engine) and feeds the API's rendered environment to the service's own
settings. Skipped where no compose tool is installed, unless REQUIRE_COMPOSE=1 (CI's
compose-tenant stage sets it after installing both).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from service.config import ConfigError
from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEV_ISSUER = "http://issuer:3011/"
DEV_AUDIENCE = "https://api.dev.local"
REAL_AUDIENCE = "https://api.example.com"


def _tools() -> list[list[str]]:
    """Compose commands available on this machine."""
    tools = []
    if shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True, check=False
    ).returncode == 0:
        tools.append(["docker", "compose"])
    if shutil.which("podman-compose"):
        tools.append(["podman-compose"])
    return tools


TOOLS = _tools()
if not TOOLS and os.environ.get("REQUIRE_COMPOSE") != "1":
    pytest.skip("no docker compose / podman-compose here", allow_module_level=True)


@pytest.fixture(params=TOOLS or [["docker", "compose"]], ids=lambda tool: " ".join(tool))
def tool(request: pytest.FixtureRequest) -> list[str]:
    """One compose implementation."""
    return request.param


def rendered(tool: list[str], tmp_path: Path, dotenv: str = "", **shell: str) -> dict:
    """`compose config` of the repository's compose file with this .env and shell environment."""
    env_file = tmp_path / ".env"
    env_file.write_text(dotenv)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH0_", "DEV_ISSUER_"))}
    env.update(shell)
    result = subprocess.run(
        [*tool, "-f", str(ROOT / "docker-compose.yml"), "--env-file", str(env_file), "config"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def api_env(config: dict) -> dict[str, str]:
    """The API container's environment, as strings."""
    return {k: str(v) for k, v in config["services"]["api"]["environment"].items()}


def test_zero_config_trusts_the_dev_issuer_and_starts(tool: list[str], tmp_path: Path) -> None:
    config = rendered(tool, tmp_path)
    settings = Settings.from_env(api_env(config))
    assert (settings.issuer, settings.audience) == (DEV_ISSUER, DEV_AUDIENCE)
    assert config["services"]["issuer"]["environment"]["DEV_ISSUER_AUDIENCE"] == DEV_AUDIENCE


@pytest.mark.parametrize(
    ("dotenv", "issuer"),
    [
        # The reported case: only a domain and a real audience.
        (f"AUTH0_DOMAIN=tenant.us.auth0.com\nAUTH0_AUDIENCE={REAL_AUDIENCE}\n", "https://tenant.us.auth0.com/"),
        # The older .env.example shape, with AUTH0_ISSUER empty on purpose.
        (f"AUTH0_DOMAIN=tenant.us.auth0.com\nAUTH0_AUDIENCE={REAL_AUDIENCE}\nAUTH0_ISSUER=\n",
         "https://tenant.us.auth0.com/"),
        # A custom domain.
        (f"AUTH0_ISSUER=https://login.example.com/\nAUTH0_AUDIENCE={REAL_AUDIENCE}\n",
         "https://login.example.com/"),
        (f"AUTH0_DOMAIN=tenant.us.auth0.com\nAUTH0_ISSUER=https://login.example.com/\n"
         f"AUTH0_AUDIENCE={REAL_AUDIENCE}\n", "https://login.example.com/"),
    ],
    ids=["domain_only", "domain_and_empty_issuer", "issuer_only", "domain_and_issuer"],
)
def test_a_tenant_in_dotenv_is_trusted_instead_of_the_dev_issuer(
    tool: list[str], tmp_path: Path, dotenv: str, issuer: str
) -> None:
    config = rendered(tool, tmp_path, dotenv)
    settings = Settings.from_env(api_env(config))
    assert (settings.issuer, settings.audience) == (issuer, REAL_AUDIENCE)
    # The dev issuer still runs but never mints for the real audience.
    assert config["services"]["issuer"]["environment"]["DEV_ISSUER_AUDIENCE"] == DEV_AUDIENCE


def test_a_tenant_in_the_shell_is_trusted_instead_of_the_dev_issuer(tool: list[str], tmp_path: Path) -> None:
    config = rendered(tool, tmp_path, AUTH0_DOMAIN="tenant.us.auth0.com", AUTH0_AUDIENCE=REAL_AUDIENCE)
    assert Settings.from_env(api_env(config)).issuer == "https://tenant.us.auth0.com/"


def test_a_plain_http_tenant_issuer_would_stop_the_api(tool: list[str], tmp_path: Path) -> None:
    config = rendered(tool, tmp_path, "AUTH0_ISSUER=http://login.example.com/\n")
    with pytest.raises(ConfigError, match="^AUTH0_ISSUER: .* is plain http"):
        Settings.from_env(api_env(config))
