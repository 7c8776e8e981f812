"""One error family in one module: every public error DyTopo raises is a DyTopoError defined in
dytopo/errors.py, so `except DyTopoError` catches them all and the docs list them in one place."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import dytopo
from dytopo import errors
from dytopo.errors import DyTopoError


def all_modules() -> list[ModuleType]:
    """Every module of the package, private ones included (`__main__` would run the CLI)."""
    names = [m.name for m in pkgutil.walk_packages(dytopo.__path__, "dytopo.")]
    return [importlib.import_module(n) for n in names if not n.endswith(".__main__")]


def public_errors_defined_in(module: ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and issubclass(value, DyTopoError)
        and value.__module__ == module.__name__
        and not name.startswith("_")
    }


def test_every_class_errors_exports_is_a_dytopo_error() -> None:
    classes = {n: v for n, v in vars(errors).items() if inspect.isclass(v) and n[0] != "_"}
    assert "StepTimeout" in classes  # the scan sees the module's classes
    not_ours = [n for n, cls in classes.items() if not issubclass(cls, DyTopoError)]
    assert not_ours == []
    exported = {n for n in errors.__all__ if inspect.isclass(getattr(errors, n))}
    assert exported == set(classes)


def test_errors_py_is_the_only_module_defining_a_public_dytopo_error() -> None:
    modules = all_modules()
    assert len(modules) > 50  # the walk reached the subpackages
    elsewhere = {
        f"{m.__name__}.{name}"
        for m in modules
        if m is not errors
        for name in public_errors_defined_in(m)
    }
    assert elsewhere == set()
    assert "SandboxUnavailable" in public_errors_defined_in(errors)


def test_the_scan_finds_an_error_defined_outside_errors_py() -> None:
    # The rule above must be able to fail: a module defining its own error is caught.
    rogue = ModuleType("dytopo.rogue")
    exec(
        "from dytopo.errors import ConfigError\nclass Rogue(ConfigError): pass\n"
        "class _Private(ConfigError): pass\n",
        vars(rogue),
    )
    assert public_errors_defined_in(rogue) == {"Rogue"}


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("dytopo.agents.cards", "CardError"),
        ("dytopo.swarm.step_timer", "StepTimeout"),
        ("dytopo.backends.meter", "TokenCapReached"),
        ("dytopo.swarm.steps", "AgentAborted"),
        ("dytopo.service.runs", "QueueFull"),
        ("dytopo.service.runs", "ServiceClosed"),
        ("dytopo.service.runs", "NotResumable"),
        ("dytopo.service.runs", "UnknownTopology"),
        ("dytopo.service.admission", "NotAllowed"),
        ("dytopo.service.admission", "OverLimit"),
        ("dytopo.service.catalog", "UnknownTopology"),
        ("dytopo.sandbox.bwrap", "SandboxError"),
        ("dytopo.sandbox.bwrap", "SandboxUnavailable"),
    ],
)
def test_the_old_homes_still_hold_the_same_class(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is getattr(errors, name)


def test_bases_and_messages_are_kept() -> None:
    assert issubclass(errors.CardError, errors.ConfigError)
    assert issubclass(errors.TokenCapReached, errors.BudgetExceeded)
    assert issubclass(errors.AgentAborted, errors.AgentFailed)
    for name in ("NotResumable", "NotAllowed", "OverLimit", "UnknownTopology"):
        assert issubclass(getattr(errors, name), errors.ConfigError)
    assert issubclass(errors.SandboxUnavailable, errors.SandboxError)
    assert issubclass(errors.StepTimeout, DyTopoError)
    unavailable = errors.SandboxUnavailable("no bwrap found")
    assert unavailable.reason == "no bwrap found"
    assert str(unavailable).startswith("the code sandbox needs bubblewrap with user namespaces")
    assert str(unavailable).endswith(errors.SANDBOX_FIX)
    assert errors.QueueFull("wait", retry_after_s=3).retry_after_s == 3
    assert errors.AgentAborted("a", "boom").agent == "a"
