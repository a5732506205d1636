"""The docs stay true to the code: every setting in the settings table with its pinned default."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import DEFAULTS
from service.config import NO_DEFAULT

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
#: The full settings table; the README shows the usual ones and links it.
SETTINGS = (ROOT / "docs" / "settings.md").read_text()


@pytest.mark.parametrize("variable", sorted(DEFAULTS))
def test_every_setting_is_in_the_settings_table_with_its_default(variable: str) -> None:
    default = DEFAULTS[variable][0]
    rows = [line for line in SETTINGS.splitlines() if line.startswith(f"| `{variable}` |")]
    assert rows, f"{variable} missing from the settings table (docs/settings.md)"
    assert f"`{default}`" in rows[0], f"{variable}: settings table default differs from {default!r}"


@pytest.mark.parametrize("variable", sorted(NO_DEFAULT))
def test_every_setting_without_default_is_in_the_settings_table(variable: str) -> None:
    assert any(line.startswith(f"| `{variable}` |") for line in SETTINGS.splitlines()), (
        f"{variable} missing from the settings table (docs/settings.md)"
    )


@pytest.mark.parametrize("command", ["bin/dev", "bin/test"])
def test_the_two_setup_commands_exist(command: str) -> None:
    assert command in README
    assert (Path(__file__).resolve().parents[2] / command).stat().st_mode & 0o111


def test_the_readme_shows_its_settings_with_the_same_defaults_as_the_full_table() -> None:
    full = {line.split("|")[1]: line for line in SETTINGS.splitlines() if line.startswith("| `")}
    shown = [line for line in README.splitlines() if line.startswith("| `") and line.split("|")[1] in full]
    assert shown, "the README's settings section lists no setting"
    for line in shown:
        assert line.split("|")[2] == full[line.split("|")[1]].split("|")[2], line


def test_the_readme_stays_short_enough_to_read() -> None:
    assert len(README.encode()) <= 16 * 1024, "move details to docs/; the README serves users first"
