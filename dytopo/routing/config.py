"""Routing settings: how each round's communication graph is built (the topology's `routing:`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["dynamic", "broadcast", "chain", "star", "random", "single"]
Execution = Literal["barrier", "tiered"]


class RoutingConfig(BaseModel):
    """Edge rule and execution order; `dynamic` + `barrier` is the paper's method."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mode: Mode = "dynamic"
    """dynamic: need/offer matching. Baselines: broadcast, chain, star, random, single."""
    tau: float = Field(default=0.35, ge=-1.0, le=1.0)
    """Edge j->i iff cos(query_i, key_j) > tau (strict)."""
    top_k: int | None = Field(default=None, ge=1, le=1_000_000)
    """Extension: each receiver keeps only its k best incoming edges above tau."""
    max_in_degree: int | None = Field(default=None, ge=1, le=1_000_000)
    """Extension: hard cap on incoming edges per receiver, applied last."""
    force_connect: bool = False
    """Extension: an agent left without incoming edges gets its best one, even below tau."""
    execution: Execution = "barrier"
    """barrier: all agents run, then messages move (paper). tiered: agents run in topological
    tiers of the previous round's graph and read same-round messages from earlier tiers."""
    hub: str | None = None
    """star mode: the hub agent's id (default: the first agent)."""
