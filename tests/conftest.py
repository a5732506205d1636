"""Shared fixtures: a real local issuer and a factory for real gunicorn servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.issuer import LocalIssuer
from tests.support.procs import ServerFactory


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    """A fresh local issuer for one test (use when the test rotates keys or takes it down)."""
    with LocalIssuer() as iss:
        yield iss


@pytest.fixture(scope="module")
def module_issuer() -> Iterator[LocalIssuer]:
    """A local issuer shared by a module's tests (leave it as you found it)."""
    with LocalIssuer() as iss:
        yield iss


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[ServerFactory]:
    """Factory for gunicorn servers that live for one test."""
    factory = ServerFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Factory for gunicorn servers shared by a module's tests."""
    factory = ServerFactory(tmp_path_factory.mktemp("gunicorn"))
    yield factory
    factory.close()
