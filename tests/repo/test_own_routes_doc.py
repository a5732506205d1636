"""docs/own-routes.md's code passes bin/test as copied: ruff, mypy and pytest over the edited service."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "own-routes.md").read_text()
APP = "service/web/app.py"
#: The two lines the guide adds to service/web/app.py.
ADDED = ("from . import orders\n", "    app.register_blueprint(orders.orders)\n")
VENV = Path(sys.executable).parent


def blocks(language: str) -> list[str]:
    """Every fenced block of a language, indentation of a list item removed."""
    found = re.findall(r"^( *)```" + language + r"\n(.*?)^\1```", GUIDE, re.M | re.S)
    return ["".join(line[len(indent):] for line in body.splitlines(True)) for indent, body in found]


def files() -> dict[str, str]:
    """Path -> content of every Python block that names its file on its first line."""
    named = [b for b in blocks("python") if re.match(r"# [\w/]+\.py\n", b)]
    return {b.split("\n", 1)[0][2:]: b for b in named}


def edited_app() -> str:
    """service/web/app.py with the guide's two blocks in place of what they replace."""
    text = (ROOT / APP).read_text()
    parts = [b for b in blocks("python") if ADDED[0] in b or ADDED[1] in b]
    assert len(parts) == 2, "the guide shows the imports and create_app of service/web/app.py in full"
    for part in parts:
        before = part.replace(ADDED[0], "").replace(ADDED[1], "")
        assert before in text, f"docs/own-routes.md shows an outdated part of {APP}:\n{before}"
        text = text.replace(before, part)
    return text


def ruff(text: str, path: str) -> subprocess.CompletedProcess[str]:
    """ruff check of text as if it were the file at path (the project's configuration)."""
    return subprocess.run(
        [str(VENV / "ruff"), "check", "--stdin-filename", path, "-"],
        input=text, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )


def test_the_guide_names_the_files_it_adds() -> None:
    assert set(files()) == {"service/web/orders.py", "tests/unit/test_orders.py"}


@pytest.mark.parametrize("path", ["service/web/orders.py", "tests/unit/test_orders.py", APP])
def test_every_python_block_passes_ruff_where_it_goes(path: str) -> None:
    text = edited_app() if path == APP else files()[path]
    done = ruff(text, path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_shell_block_parses_and_every_json_block_loads() -> None:
    for block in blocks("sh"):
        done = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True, check=False)
        assert done.returncode == 0, (block, done.stderr)
    for block in blocks("json"):
        json.loads(block)


@pytest.mark.slow
def test_the_copied_blocks_pass_ruff_mypy_and_their_test(tmp_path: Path) -> None:
    """What bin/test runs, over a copy of the repository with the guide's blocks added."""
    for name in ("service", "dev_issuer", "tests"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    for path, text in files().items():
        (tmp_path / path).write_text(text)
    (tmp_path / APP).write_text(edited_app())
    for command in (["ruff", "check", "."], ["mypy"],
                    ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_orders.py"]):
        done = subprocess.run([str(VENV / command[0]), *command[1:]], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, (command, done.stdout[-3000:], done.stderr[-3000:])
