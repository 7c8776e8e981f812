"""From a loaded topology to a swarm: agents, manager and tools on one backend and embedder."""

from __future__ import annotations

from pathlib import Path

from dytopo.agents.base import Agent
from dytopo.agents.cards import load_card
from dytopo.agents.llm import LLMAgent
from dytopo.agents.manager import LLMManager
from dytopo.agents.tool_loop import ToolPolicy
from dytopo.backends.base import Backend
from dytopo.budget.plan import BudgetPlan
from dytopo.embedders.base import Embedder
from dytopo.swarm.checkpoint import origin_of
from dytopo.swarm.loop import Swarm
from dytopo.tools.context import ToolContext
from dytopo.tools.registry import ToolRegistry
from dytopo.topology import Topology


def build_swarm(
    topology: Topology,
    backend: Backend,
    embedder: Embedder,
    *,
    base_dir: Path | None = None,
    plan: BudgetPlan | None = None,
    trust_topology: bool = False,
    source: str | Path | None = None,
) -> Swarm:
    """Instantiate a topology's agents and manager on one backend, within `plan`'s budgets.

    `source`: the file the topology was loaded from; the run's checkpoints name it, so that
    `dytopo resume` can rebuild the swarm (and refuse if the file changed)."""

    def context(agent: str, explicit: int | None) -> int | None:
        return plan.budget(agent).context_budget if plan is not None else explicit

    # Tool modules are code: only from base_dir's tree or entry points unless trusted.
    registry = ToolRegistry.discover(topology.tool_modules, base_dir, trust_topology=trust_topology)
    tool_context = resolve_paths(topology.tool_settings, base_dir or Path.cwd())
    agents: list[Agent] = []
    for spec in topology.agents:
        card = load_card(spec.card or spec.id, base_dir, trust_topology=trust_topology)
        policy = ToolPolicy(
            choice=spec.tool_choice,
            max_rounds=spec.max_tool_rounds,
            reasks=topology.structured_reasks,
        )
        agents.append(
            LLMAgent(
                spec.id,
                card,
                backend,
                instructions=spec.instructions,
                max_output_tokens=spec.budget.max_output_tokens,
                context_budget=context(spec.id, spec.budget.context),
                sampling=spec.sampling,
                reasks=topology.structured_reasks,
                tools=registry.subset(spec.tools),
                tool_context=tool_context,
                tool_policy=policy,
                text_work=spec.text_work,
            )
        )
    m = topology.manager
    manager = LLMManager(
        load_card(m.card, base_dir, trust_topology=trust_topology),
        backend,
        instructions=m.instructions,
        max_output_tokens=m.budget.max_output_tokens,
        context_budget=context("manager", m.budget.context),
        sampling=m.sampling,
        reasks=topology.structured_reasks,
    )
    swarm = Swarm(
        agents,
        manager,
        embedder,
        routing=topology.routing,
        max_rounds=topology.max_rounds,
        min_rounds=topology.min_rounds,
        seed=topology.seed,
        agent_timeout_s=topology.agent_timeout_s,
        queue_timeout_s=topology.queue_timeout_s,
        on_agent_error=topology.on_agent_error,
        name=topology.name,
        run_token_budget=topology.run_token_budget,
        answer=topology.answer,
        config={
            **topology.model_dump(mode="json"),
            "budget_plan": plan.model_dump() if plan is not None else None,
        },
    )
    swarm.origin = origin_of(source, topology) if source is not None else None
    return swarm


def resolve_paths(settings: ToolContext, base: Path) -> ToolContext:
    """Tool folders in a topology are relative to the topology file."""
    docs = settings.docs_dir
    return settings.model_copy(
        update={
            "workspace": (base / settings.workspace).resolve(),
            "docs_dir": (base / docs).resolve() if docs is not None else None,
        }
    )
