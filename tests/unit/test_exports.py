"""The public API: `import dytopo` offers exactly what `__all__` lists, each name the object its
module defines, and everything the docs show or a user plugs in (in the spirit of httpx's
tests/test_exported_members.py)."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import dytopo
import dytopo.testing
from dytopo.errors import DyTopoError

ROOT = Path(__file__).resolve().parents[2]
SUBPACKAGES = ["dytopo.backends", "dytopo.embedders", "dytopo.managed", "dytopo.tools"]
# Bases a user subclasses or plugs in; every implementation the library ships is exported.
PLUGIN_BASES = (dytopo.Agent, dytopo.Backend, dytopo.Embedder, dytopo.Manager)


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
    home = importlib.import_module(value.__module__)
    assert home.__name__.startswith("dytopo.")
    assert value.__name__ == name
    assert getattr(home, name) is value


def test_version_is_the_installed_distributions() -> None:
    assert dytopo.__version__ == importlib.metadata.version("dytopo")


def test_every_error_class_is_exported() -> None:
    errors = importlib.import_module("dytopo.errors")
    classes = {n for n, cls in defined_in(errors) if issubclass(cls, DyTopoError)}
    assert classes, "dytopo.errors defines no DyTopoError subclasses"
    assert classes <= set(dytopo.__all__), classes - set(dytopo.__all__)


def test_every_shipped_plugin_implementation_is_exported() -> None:
    shipped = {
        name
        for module in library_modules()
        for name, cls in defined_in(module)
        if issubclass(cls, PLUGIN_BASES)
    }
    assert {"LLMAgent", "LlamaCppBackend", "HashEmbedder", "LLMManager"} <= shipped
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
