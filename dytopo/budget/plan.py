"""Token budgets: every agent and the manager get a context and an output budget that fit the
server, checked before the first request."""

from __future__ import annotations

from pydantic import BaseModel, Field

from dytopo.topology import BudgetSpec, Topology

# Smallest prompt (system + task + format) an agent can work with.
MIN_PROMPT_TOKENS = 256


class AgentBudget(BaseModel):
    agent: str
    """Agent id, or `manager`."""
    field: str
    """Where to change it in the topology file."""
    context_budget: int
    """Prompt + output tokens per request."""
    max_output_tokens: int
    explicit: bool
    """True when set by `budget.context`, False when derived from the weights."""


class BudgetPlan(BaseModel):
    n_ctx: int
    """The server's whole context (`--ctx-size`)."""
    slots: int
    per_slot_ctx: int
    """A slot's share, n_ctx / slots: the default budget of an agent of the heaviest weight."""
    request_limit: int
    """The most one request may use: the slot's share, or all of n_ctx with a unified cache."""
    kv_unified: bool = False
    kv_layout: str = ""
    """How the KV layout was learnt (for doctor and plan)."""
    agents: list[AgentBudget] = Field(default_factory=list)
    concurrent_peak: int = 0
    """The `slots` largest budgets added up: the most context concurrent requests can hold."""
    problems: list[str] = Field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems

    def budget(self, agent: str) -> AgentBudget:
        return next(b for b in self.agents if b.agent == agent)


def plan_budgets(
    topology: Topology, *, n_ctx: int, slots: int, kv_unified: bool = False
) -> BudgetPlan:
    """Give every agent (and the manager) its budgets; list what does not fit and the fix.

    `n_ctx` is the server's whole context (`--ctx-size`). Without a unified KV cache every slot
    owns n_ctx / slots tokens, so each request only has to fit its own slot. With one, the slots
    share the pool: one request may use it all, but the `slots` largest budgets must fit together.
    """
    per_slot_ctx = n_ctx // slots
    limit = n_ctx if kv_unified else per_slot_ctx
    specs: list[tuple[str, str, BudgetSpec]] = [
        (a.id, f"agents.{k}.budget", a.budget) for k, a in enumerate(topology.agents)
    ]
    specs.append(("manager", "manager.budget", topology.manager.budget))
    heaviest = max(spec.weight for _, _, spec in specs)
    plan = BudgetPlan(
        n_ctx=n_ctx,
        slots=slots,
        per_slot_ctx=per_slot_ctx,
        request_limit=limit,
        kv_unified=kv_unified,
    )
    for agent, field, spec in specs:
        context = spec.context or int(per_slot_ctx * spec.weight / heaviest)
        plan.agents.append(
            AgentBudget(
                agent=agent,
                field=field,
                context_budget=context,
                max_output_tokens=spec.max_output_tokens,
                explicit=spec.context is not None,
            )
        )
        where = f"{field}.context"
        if context > limit:
            source = "the shared KV cache" if kv_unified else f"n_ctx {n_ctx} / {slots} slots"
            plan.problems.append(
                f"{where} = {context} exceeds what one request may use, {limit} ({source}): "
                f"lower {where} to {limit} or less"
            )
        usable = min(context, limit)
        room = usable - MIN_PROMPT_TOKENS
        if spec.max_output_tokens > room:
            plan.problems.append(
                f"{field}.max_output_tokens = {spec.max_output_tokens} leaves less than "
                f"{MIN_PROMPT_TOKENS} prompt tokens in a {usable}-token budget: lower "
                f"{field}.max_output_tokens to {max(room, 0)} or less"
                + ("" if context >= limit else f", or raise {where}")
            )
    largest = sorted(plan.agents, key=lambda b: -b.context_budget)[:slots]
    plan.concurrent_peak = sum(b.context_budget for b in largest)
    if kv_unified and plan.concurrent_peak > n_ctx:
        names = ", ".join(f"{b.field}.context ({b.context_budget})" for b in largest)
        plan.problems.append(
            f"{slots} concurrent requests may need {plan.concurrent_peak} tokens but the shared "
            f"KV cache holds {n_ctx}: lower the largest budgets: {names}"
        )
    return plan


def kv_layout(configured: bool | None, own_server: bool) -> tuple[bool, str]:
    """Whether the server's slots share one KV pool, and how DyTopo knows.

    llama-server started without -np runs 4 slots on one pool and reports the whole pool as
    each slot's n_ctx (measured: b0-unknown, Qwen2.5-Coder-0.5B, -c 8192: 4 slots x 8192);
    neither /props nor /slots says which layout it runs. Planned as one pool, four concurrent
    requests fit together; planned per slot, they could need 4x what the server holds."""
    if configured is not None:
        shared = "one pool shared by the slots" if configured else "one context per slot"
        return configured, f"{shared} (backend.kv_unified: {str(configured).lower()})"
    if own_server:
        return False, "one context per slot (DyTopo's own server, --no-kv-unified)"
    return True, (
        "assumed one pool shared by the slots (the server does not say; llama-server shares "
        "one unless started with --no-kv-unified): set backend.kv_unified: false if each slot "
        "has its own context, to give each agent more"
    )


def plan_for_server(
    topology: Topology, per_slot_reported: int, slots: int, layout: tuple[bool, str]
) -> BudgetPlan:
    """`plan_budgets` for a server as /props describes it, in the KV layout `kv_layout` gave."""
    unified, how = layout
    n_ctx = server_context(per_slot_reported, slots, unified)
    plan = plan_budgets(topology, n_ctx=n_ctx, slots=slots, kv_unified=unified)
    plan.kv_layout = how
    return plan


def server_context(per_slot_reported: int, slots: int, kv_unified: bool) -> int:
    """The server's whole context from what /props reports per slot."""
    # With --kv-unified, llama-server reports the shared pool as every slot's n_ctx.
    return per_slot_reported if kv_unified else per_slot_reported * slots
