"""The README stays true to the code: every setting documented with its pinned default."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import DEFAULTS
from service.config import NO_DEFAULT

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("variable", sorted(DEFAULTS))
def test_every_setting_is_in_the_readme_with_its_default(variable: str) -> None:
    default = DEFAULTS[variable][0]
    rows = [line for line in README.splitlines() if line.startswith(f"| `{variable}` |")]
    assert rows, f"{variable} missing from the README settings table"
    assert f"`{default}`" in rows[0], f"{variable}: README default differs from {default!r}"


@pytest.mark.parametrize("variable", sorted(NO_DEFAULT))
def test_every_setting_without_default_is_in_the_readme(variable: str) -> None:
    assert any(line.startswith(f"| `{variable}` |") for line in README.splitlines()), (
        f"{variable} missing from the README settings table"
    )


@pytest.mark.parametrize("command", ["bin/dev", "bin/test"])
def test_the_two_setup_commands_exist(command: str) -> None:
    assert command in README
    assert (Path(__file__).resolve().parents[2] / command).stat().st_mode & 0o111
