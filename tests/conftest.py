"""Unit tests never touch the network; integration tests (marked) talk to a real llama-server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import psutil
import pytest
import structlog


class NetworkRefused(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _refuse_network(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    if request.node.get_closest_marker("integration") is None:

        async def refuse(self: object, req: httpx.Request) -> httpx.Response:
            raise NetworkRefused(
                f"unit test tried to reach {req.url}; use httpx.MockTransport or "
                "dytopo.testing.ScriptedBackend, or mark the test @pytest.mark.integration"
            )

        monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", refuse)
    return


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keep background-server state and logs of tests away from the user's cache, but share the
    # converted embedder across tests of one session.
    monkeypatch.setenv("DYTOPO_HOME", str(tmp_path_factory.getbasetemp() / "dytopo-home"))
    monkeypatch.delenv("DYTOPO_BASE_URL", raising=False)
    monkeypatch.delenv("DYTOPO_EMBED_URL", raising=False)


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture
def new_children() -> Callable[[], list[psutil.Process]]:
    """Children of this test process started since the test began.

    A whole-suite run keeps the integration tests' session servers alive as children of pytest;
    they predate the test and are not its leftovers.
    """
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    return lambda: [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
