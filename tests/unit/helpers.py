"""Helpers for building swarms on the scripted backend."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from dytopo.agents.base import Agent
from dytopo.agents.cards import RoleCard
from dytopo.agents.llm import LLMAgent
from dytopo.agents.manager import LLMManager
from dytopo.embedders import HashEmbedder
from dytopo.routing.config import RoutingConfig
from dytopo.swarm import checkpoint as checkpoint_module
from dytopo.swarm.checkpoint import Checkpoint
from dytopo.swarm.loop import Swarm
from dytopo.testing import ScriptedBackend


def step(public: str, private: str, query: str, key: str) -> str:
    return json.dumps({"public": public, "private": private, "query": query, "key": key})


def goal(text: str) -> str:
    return json.dumps({"goal": text})


def decision(halt: bool, final: str = "", goal_next: str = "keep going") -> str:
    return json.dumps(
        {"goal_next": goal_next, "halt": halt, "reason": "because", "final_answer": final}
    )


def final(text: str) -> str:
    return json.dumps({"final_answer": text})


def card(name: str) -> RoleCard:
    return RoleCard(name=name, prompt=f"You are the {name}.")


def make_swarm(
    backend: ScriptedBackend,
    ids: Sequence[str],
    *,
    extra: Sequence[Agent] = (),
    **options: object,
) -> Swarm:
    agents: list[Agent] = [LLMAgent(i, card(i), backend, reasks=1) for i in ids]
    agents += list(extra)
    routing = options.pop("routing", RoutingConfig(tau=0.5))
    return Swarm(
        agents,
        LLMManager(card("manager"), backend, reasks=1),
        HashEmbedder(),
        routing=routing,
        **options,
    )  # type: ignore[arg-type]


def after_each_checkpoint(
    monkeypatch: pytest.MonkeyPatch, callback: Callable[[Checkpoint, Path], None]
) -> None:
    """Call `callback(checkpoint, path)` on the writer thread as each checkpoint write lands (the
    writes run while the next round goes on, so a trace observer cannot see them land)."""
    real = checkpoint_module.write_checkpoint

    def write(cp: Checkpoint, path: Path, *encoder: Any) -> None:
        real(cp, path, *encoder)
        callback(cp, path)

    monkeypatch.setattr(checkpoint_module, "write_checkpoint", write)
