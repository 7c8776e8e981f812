"""The public API: `import dytopo` offers exactly what `__all__` lists, each name the object its
module defines, and everything the docs show or a user plugs in (in the spirit of httpx's
tests/test_exported_members.py)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import importlib.util
import inspect
import pkgutil
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import decision, goal, step

import dytopo
import dytopo.testing
from dytopo import runner
from dytopo.errors import DyTopoError

ROOT = Path(__file__).resolve().parents[2]
SUBPACKAGES = [
    *("dytopo.agents", "dytopo.backends", "dytopo.budget", "dytopo.embedders", "dytopo.managed"),
    "dytopo.tools",
]
# Bases a user subclasses or plugs in; every implementation the library ships is exported,
# except the benchmarks' stand-in for a llama-server (dytopo.backends.simulated).
PLUGIN_BASES = (dytopo.Agent, dytopo.Backend, dytopo.Embedder, dytopo.Manager)
NOT_FOR_USERS = {"SimulatedBackend"}
# Type aliases have no __name__ or __module__ of their own: where each is defined.
ALIASES = {"HaltReason": "dytopo.swarm.result", "Observer": "dytopo.swarm.trace"}


# The public API, exactly: a change here is a deliberate change of what users may rely on.
PUBLIC_API = [
    # Run a topology (file or object), continue a stopped run, build a swarm from a file.
    *("run", "arun", "resume", "aresume", "load_swarm"),
    *("connect", "load_topology", "load_card", "configure_logging", "__version__"),
    # The swarm and what it is built from.
    *("Swarm", "Topology", "RoutingConfig", "RoleCard", "AnswerSpec"),
    # A custom agent: what it implements, receives and returns.
    *("Agent", "FunctionAgent", "LLMAgent", "StepContext", "AgentOutput", "MemoryItem", "Work"),
    # A custom manager.
    *("Manager", "LLMManager", "ManagerDecision", "FinalAnswer", "PublicMessage", "TeamMember"),
    # A custom tool.
    *("tool", "Tool", "ToolContext"),
    # A custom backend subclasses Backend; the types its methods take and return are in
    # dytopo.backends (the transport is not the top level's).
    *("Backend", "LlamaCppBackend", "BackendSettings", "Sampling", "Usage"),
    # A custom embedder.
    *("Embedder", "HashEmbedder", "HttpEmbedder"),
    # What a run returns, and its trace events' observers.
    *("RunResult", "RoundRecord", "Routing", "Edge", "HaltReason", "Observer"),
    # The errors a run raises to its caller (the service's, the batch pool's and the sandbox's
    # stay in dytopo.errors).
    *("DyTopoError", "ConfigError", "BackendError", "BackendUnavailable", "MalformedReply"),
    *("ContextOverflow", "ManagedServerError", "BudgetExceeded", "TokenCapReached", "ToolError"),
    *("RunError", "RunInUse", "AgentFailed", "RoundFailed"),
]


def library_modules() -> list[ModuleType]:
    """Every module of the package (`__main__` would run the CLI; `testing` has its own API)."""
    names = [m.name for m in pkgutil.walk_packages(dytopo.__path__, "dytopo.")]
    return [
        importlib.import_module(n)
        for n in names
        if n not in ("dytopo.__main__", "dytopo.testing")
        and not any(part.startswith("_") for part in n.split("."))
    ]


def defined_in(module: ModuleType) -> list[tuple[str, type]]:
    return [
        (name, value)
        for name, value in vars(module).items()
        if inspect.isclass(value) and value.__module__ == module.__name__ and name[0] != "_"
    ]


def test_all_is_sorted_without_duplicates() -> None:
    names = [n for n in dytopo.__all__ if n != "__version__"]
    assert names == sorted(names)
    assert len(set(dytopo.__all__)) == len(dytopo.__all__)


def test_the_public_api_is_exactly_this_list() -> None:
    assert len(PUBLIC_API) == len(set(PUBLIC_API))
    assert sorted(dytopo.__all__) == sorted(PUBLIC_API)
    # Transport and run internals stay in their modules.
    internals = {"SlotLimiter", "ManagedStack", "RunState", "Checkpoint", "SimulatedBackend"}
    internals |= {"ChatRequest", "ChatResponse", "ChatMessage", "ServerInfo", "ToolCall"}
    assert internals.isdisjoint(vars(dytopo))


def test_the_namespace_holds_exactly_what_all_lists() -> None:
    public = {
        name
        for name, value in vars(dytopo).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(dytopo.__all__) - {"__version__"}


@pytest.mark.parametrize("name", [n for n in dytopo.__all__ if n != "__version__"])
def test_each_export_is_the_object_its_module_defines(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from dytopo import {name}", namespace)
    value = namespace[name]
    assert value is getattr(dytopo, name)
    if name in ALIASES:
        assert getattr(importlib.import_module(ALIASES[name]), name) is value
        return
    home = importlib.import_module(value.__module__)
    assert home.__name__.startswith("dytopo.")
    assert value.__name__ == name
    assert getattr(home, name) is value


def test_version_is_the_installed_distributions() -> None:
    assert dytopo.__version__ == importlib.metadata.version("dytopo")


def test_every_exported_error_is_the_one_dytopo_errors_defines() -> None:
    errors = importlib.import_module("dytopo.errors")
    classes = {n for n, cls in defined_in(errors) if issubclass(cls, DyTopoError)}
    assert classes, "dytopo.errors defines no DyTopoError subclasses"
    exported = {n for n in dytopo.__all__ if isinstance(getattr(dytopo, n), type)}
    exported_errors = {n for n in exported if issubclass(getattr(dytopo, n), BaseException)}
    assert exported_errors <= classes, exported_errors - classes
    assert {n for n in exported_errors if getattr(dytopo, n) is not getattr(errors, n)} == set()


def test_every_shipped_plugin_implementation_is_exported() -> None:
    shipped = {
        name
        for module in library_modules()
        for name, cls in defined_in(module)
        if issubclass(cls, PLUGIN_BASES)
    }
    assert {"LLMAgent", "LlamaCppBackend", "HashEmbedder", "LLMManager"} <= shipped
    assert shipped >= NOT_FOR_USERS
    shipped -= NOT_FOR_USERS
    assert shipped <= set(dytopo.__all__), shipped - set(dytopo.__all__)


def documented_names() -> set[str]:
    """Top-level names the README and the examples use: `dytopo.X` and `from dytopo import X`."""
    names: set[str] = set()
    texts = [ROOT / "README.md", *sorted((ROOT / "examples").glob("*.py"))]
    for text in (p.read_text(encoding="utf-8") for p in texts):
        names |= set(re.findall(r"\bdytopo\.([A-Za-z_]\w*)", text))
        for group in re.findall(r"^from dytopo import (\([^)]*\)|.*)$", text, re.M):
            items = group.strip("()").replace("\n", ",").split(",")
            names |= {item.split(" as ")[0].strip() for item in items if item.strip()}
    return {n for n in names if importlib.util.find_spec(f"dytopo.{n}") is None}


def test_every_name_the_docs_use_is_exported() -> None:
    names = documented_names()
    assert {"run", "Swarm", "LLMAgent", "DyTopoError"} <= names  # the scan found the docs
    assert names <= set(dytopo.__all__), names - set(dytopo.__all__)


@pytest.mark.parametrize("package", [*SUBPACKAGES, "dytopo.testing"])
def test_subpackage_all_is_sorted_and_true(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        value = getattr(module, name)
        # Classes and functions name their home; other values (a ContextVar) must have one.
        home = getattr(value, "__module__", None) or next(
            m.__name__ for m in library_modules() if m is not module and vars(m).get(name) is value
        )
        assert home.startswith(package), (name, home)
        assert getattr(importlib.import_module(home), name) is value
        if name in dytopo.__all__:
            assert getattr(dytopo, name) is value


def test_testing_exports_every_public_class_it_defines() -> None:
    defined = {name for name, _ in defined_in(dytopo.testing)}
    assert {"ScriptedBackend", "Reply", "UnexpectedCall"} <= defined
    assert set(dytopo.testing.__all__) == defined


async def test_the_blocking_entry_points_name_their_async_twins_inside_an_event_loop() -> None:
    import pytest

    from dytopo.errors import ConfigError

    with pytest.raises(ConfigError, match=r"await dytopo\.arun"):
        dytopo.run("topologies/research.yaml", "task")
    with pytest.raises(ConfigError, match=r"await dytopo\.aresume"):
        dytopo.resume("0123456789ab")
    import inspect

    assert inspect.iscoroutinefunction(dytopo.arun)
    assert inspect.signature(dytopo.arun).parameters.keys() == (
        inspect.signature(dytopo.run).parameters.keys()
    )
    assert inspect.signature(dytopo.aresume).parameters.keys() == (
        inspect.signature(dytopo.resume).parameters.keys()
    )


TINY = """\
name: tiny
embedder: {kind: hash}
max_rounds: 2
min_rounds: 1
agents:
  - {id: a, card: researcher}
  - {id: b, card: analyst}
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY, encoding="utf-8")
    return path


async def test_arun_runs_a_topology_inside_a_running_event_loop(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert asyncio.get_running_loop().is_running()  # where dytopo.run() refuses to start
    backend = dytopo.testing.ScriptedBackend(
        by_tag={
            "a": [step("found", "LRU evicts the oldest entry", "an analysis", "facts")],
            "b": [step("compared", "LFU keeps hot entries", "facts", "an analysis")],
            "manager": [goal("Compare LRU and LFU."), decision(True, "ANSWER")],
        },
        n_ctx_per_slot=16384,
    )

    @asynccontextmanager
    async def on_the_script(topology: Any, *args: Any) -> AsyncIterator[dytopo.Swarm]:
        # _built(topology, backend_url, embed_url, base_dir, trust_topology, source, model):
        # the servers are the script; the swarm is built and planned as for a real one.
        yield await runner.swarm_on(
            topology, backend, dytopo.HashEmbedder(), base_dir=args[2], source=args[4]
        )

    monkeypatch.setattr(runner, "_built", on_the_script)
    result = await dytopo.arun(
        tiny, "Compare LRU and LFU caches.", trace_path=tiny.with_suffix(".jsonl")
    )
    backend.assert_complete()
    assert (result.final_answer, result.halt_reason, len(result.rounds)) == (
        "ANSWER",
        "manager",
        1,
    )
    assert result.trace_path == str(tiny.with_suffix(".jsonl"))
