"""What a service caller may set, and how much: an allow-list of topology fields and limits on
agents, rounds and text, checked on the request's JSON before any topology is built.

The rule (docs/RELIABILITY.md): a caller picks the task, the rounds, the routing (mode, tau,
top_k) and the seed. An inline topology may also name its agents (id, role card by name from
the service's agents/ folders, instructions, text_work) and its manager (card, instructions),
without tools. Tools, workspaces, code, budgets, checks and servers are the operator's: they
come only from the topology files in the service's folder.
"""

from __future__ import annotations

import re
from typing import Any

from dytopo.errors import ConfigError, NotAllowed, OverLimit
from dytopo.service.models import RunRequest
from dytopo.service.settings import ServiceSettings
from dytopo.topology import Topology

__all__ = ["NotAllowed", "OverLimit", "admit"]

ROUTING_FIELDS = ("mode", "tau", "top_k")
OVERRIDE_FIELDS = ("max_rounds", "min_rounds", "routing", "seed")
INLINE_FIELDS = ("name", "description", *OVERRIDE_FIELDS, "agents", "manager")
AGENT_FIELDS = ("id", "card", "instructions", "text_work")
MANAGER_FIELDS = ("card", "instructions")
CARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""A caller names a role card of the service's agents/ folders, never a path."""
MAX_TEXT_CHARS = 4000
"""Longest instructions, description or card name of an inline topology."""

_OPERATOR = "tools, folders, code, budgets and servers are the operator's"


def admit(request: RunRequest, settings: ServiceSettings) -> None:
    """NotAllowed or OverLimit, one line naming the field, unless every field the request sets
    is on the allow-list and within the service's limits; costs nothing (no topology built)."""
    _only(request.overrides, OVERRIDE_FIELDS, "overrides")
    _routing_and_rounds(request.overrides, "overrides", settings)
    inline = request.inline
    if inline is None:
        return
    _only(inline, INLINE_FIELDS, "inline")
    _routing_and_rounds(inline, "inline", settings)
    _texts(inline, ("name", "description"), "inline")
    agents = inline.get("agents")
    if isinstance(agents, list):
        if len(agents) > settings.max_agents:
            raise OverLimit(
                f"inline.agents: {len(agents)} agents; this service runs at most "
                f"{settings.max_agents} (--max-agents)"
            )
        for i, agent in enumerate(agents):
            if isinstance(agent, dict):
                where = f"inline.agents[{i}]"
                _only(agent, AGENT_FIELDS, where, "an inline topology's agents get no tools")
                _texts(agent, ("id", "instructions"), where)
                _card(agent, where)
    manager = inline.get("manager")
    if isinstance(manager, dict):
        _only(manager, MANAGER_FIELDS, "inline.manager")
        _texts(manager, ("instructions",), "inline.manager")
        _card(manager, "inline.manager")


def _only(data: dict[str, Any], allowed: tuple[str, ...], where: str, why: str = "") -> None:
    for key in data:
        if key not in allowed:
            shown = str(key)[:40].encode("ascii", "backslashreplace").decode()
            reason = why or _OPERATOR
            raise NotAllowed(
                f"{where} may not set {shown}: a caller may set {', '.join(allowed)}; "
                f"{reason} (use a topology from GET /v1/topologies)"
            )


def _routing_and_rounds(data: dict[str, Any], where: str, settings: ServiceSettings) -> None:
    routing = data.get("routing")
    if isinstance(routing, dict):
        _only(routing, ROUTING_FIELDS, f"{where}.routing")
    for key in ("max_rounds", "min_rounds"):
        # An inline topology that leaves it out gets the default (5 rounds).
        value = data.get(key, Topology.model_fields[key].default if where == "inline" else None)
        if value is None:
            continue
        # Strictly a JSON integer: the topology's validation would turn "50" or 50.0 into 50
        # after this check, and a bool is an int to Python.
        if type(value) is not int:
            raise ConfigError(f"{where}.{key}: give a whole number of rounds, not {value!r:.40}")
        if value > settings.max_rounds:
            raise OverLimit(
                f"{where}.{key}: {value} rounds; this service runs at most "
                f"{settings.max_rounds} for a caller (--max-rounds)"
            )


def _card(data: dict[str, Any], where: str) -> None:
    card = data.get("card")
    if isinstance(card, str) and not CARD_NAME.fullmatch(card):
        raise NotAllowed(
            f"{where}.card: {card[:40]!r} is not a role card name (letters, digits, - and _; "
            "no paths or .md files): an inline topology uses the service's role cards"
        )


def _texts(data: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            raise OverLimit(f"{where}.{key}: {len(value):,} characters; at most {MAX_TEXT_CHARS:,}")
