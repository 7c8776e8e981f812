"""Integration tests run against REAL llama-server processes (the embedded default)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dytopo.managed import ManagedStack

HERE = Path(__file__).parent
SMALL_MODEL = "smollm2-135m"
"""The mechanics tests run on the 135M model: seconds per run where the 1.5B default takes
minutes, and CI time stays what it was."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
            # Real generation on 2 shared CPU cores: minutes, not the unit tests' seconds. A test
            # that sets its own limit (a kill-restart-resume cycle) keeps it.
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(900))


def shared_models_dir() -> Path:
    """Assembled models outlive test sessions (1 GB, once per machine): $DYTOPO_MODELS, else
    the models folder of the user's own DyTopo cache (DYTOPO_HOME is a temp folder in tests)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(os.environ.get("DYTOPO_MODELS") or os.path.join(cache, "dytopo", "models"))


@pytest.fixture(scope="session", autouse=True)
def _small_model() -> Iterator[None]:
    """Every embedded server of the session (fixtures, CLI subprocesses) on SMALL_MODEL unless
    a test asks for another, with one model cache across sessions."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DYTOPO_MODEL", SMALL_MODEL)
        patch.setenv("DYTOPO_MODELS", str(shared_models_dir()))
        yield


@pytest.fixture(scope="session")
def dytopo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "dytopo-home"


@pytest.fixture(scope="session")
def stack(dytopo_home: Path) -> Iterator[ManagedStack]:
    """One embedded chat + embedding server pair for the whole session (2 slots x 2048 ctx)."""
    previous = os.environ.get("DYTOPO_HOME")
    os.environ["DYTOPO_HOME"] = str(dytopo_home)
    managed = ManagedStack(model=SMALL_MODEL, slots=2, ctx_per_slot=2048)
    try:
        asyncio.run(managed.start())
        yield managed
    finally:
        managed.stop()
        if previous is None:
            os.environ.pop("DYTOPO_HOME", None)
        else:
            os.environ["DYTOPO_HOME"] = previous
