"""The LLM-backed agent: role card + backend, strict four-field JSON each round."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dytopo.agent import Agent, AgentOutput, StepContext
from dytopo.backends.base import Backend
from dytopo.backends.types import ChatMessage, ChatRequest, Sampling
from dytopo.cards import RoleCard
from dytopo.errors import AgentFailed
from dytopo.memory import MemoryItem
from dytopo.prompting import Packer
from dytopo.structured import ask_structured
from dytopo.tools.context import ToolContext
from dytopo.tools.executor import ToolExecutor
from dytopo.tools.loop import ToolPolicy, run_tools, tool_notes
from dytopo.tools.registry import Tool

# No placeholder JSON here: small models copy placeholders verbatim. The server's JSON-schema
# constraint already fixes the shape; the prompt only has to name the keys.
FORMAT = "Reply with one JSON object with the string keys public, private, query and key."
CLOSING = (
    "Do your part for this round's goal now. Put your actual work in private, a one-sentence "
    "summary in public, what you need next in query and what you can give in key."
)


class LLMAgent(Agent):
    """An agent whose step is one structured chat request (plus re-asks when malformed)."""

    def __init__(
        self,
        id: str,
        card: RoleCard,
        backend: Backend,
        *,
        instructions: str = "",
        max_output_tokens: int = 800,
        context_budget: int | None = None,
        sampling: Sampling | None = None,
        reasks: int = 2,
        tools: Sequence[Tool] = (),
        tool_context: ToolContext | None = None,
        tool_policy: ToolPolicy | None = None,
    ) -> None:
        super().__init__(id, card.name)
        self.tools = list(tools)
        self.tool_context = tool_context or ToolContext()
        self.tool_policy = tool_policy or ToolPolicy(reasks=reasks)
        self.card = card
        self.backend = backend
        self.instructions = instructions
        self.max_output_tokens = max_output_tokens
        self.context_budget = context_budget
        self.sampling = sampling or Sampling()
        self.reasks = reasks

    def system_prompt(self) -> str:
        parts = [self.card.prompt, self.instructions.strip(), FORMAT]
        return "\n\n".join(p for p in parts if p)

    def messages(
        self, ctx: StepContext, notes: Sequence[str], task: str | None = None
    ) -> list[ChatMessage]:
        """The prompt, with `notes` (rendered memory, already in display order) included."""
        user = [
            f"TASK:\n{task if task is not None else ctx.task}",
            f"ROUND {ctx.round} GOAL (from the manager):\n{ctx.goal}",
        ]
        user.append(
            "YOUR MEMORY (your reports and messages routed to you):\n"
            + ("\n".join(notes) if notes else "(empty: first round)")
        )
        user.append(CLOSING)
        return [
            ChatMessage(role="system", content=self.system_prompt()),
            ChatMessage(role="user", content="\n\n".join(user)),
        ]

    async def step(self, ctx: StepContext) -> AgentOutput:
        budget = self.context_budget or (await self.backend.connect()).n_ctx_per_slot
        # Most valuable first: this round's messages, then memory newest first.
        ranked = _ranked(ctx.same_round, ctx.memory)
        order = {id(item): k for k, item in enumerate([*ctx.memory, *ctx.same_round])}

        def build_with(notes: Sequence[str]) -> Callable[[str, Sequence[str]], list[ChatMessage]]:
            def build(task: str, kept: Sequence[str]) -> list[ChatMessage]:
                kept_notes, kept_memory = kept[: len(notes)], kept[len(notes) :]
                chosen = sorted(ranked[: len(kept_memory)], key=lambda item: order[id(item)])
                return self.messages(ctx, [*kept_notes, *(item.render() for item in chosen)], task)

            return build

        texts = [item.render() for item in ranked]
        notes: list[str] = []
        if self.tools:
            definitions = [t.definition() for t in self.tools]
            # The first tool request keeps room for the results; later turns pin them at the end.
            tool_pack = Packer(
                self.backend,
                build_with([]),
                ctx.task,
                texts,
                budget=budget,
                max_output_tokens=self.tool_policy.max_tokens,
                reserve=self._tool_room(budget),
                who=f"agent {self.id}",
                tools=definitions,
            )
            phase = await run_tools(
                self.backend,
                await tool_pack(),
                ToolExecutor(self.tools, self._sized_context(budget)),
                self.tool_policy,
                self.sampling,
                tag=self.id,
                emit=ctx.emit,
                pack=tool_pack,
            )
            ctx.usage = ctx.usage + phase.usage
            ctx.attempts.extend(phase.attempts)
            notes = tool_notes(phase.outcomes)
        pack = Packer(
            self.backend,
            build_with(notes),
            ctx.task,
            [*notes, *texts],
            budget=budget,
            max_output_tokens=self.max_output_tokens,
            who=f"agent {self.id}",
            report=ctx.packing,
            dropped=ctx.dropped,
        )
        request = ChatRequest(
            messages=await pack(),
            max_tokens=self.max_output_tokens,
            sampling=self.sampling,
            tag=self.id,
        )
        result = await ask_structured(
            self.backend,
            request,
            AgentOutput,
            reasks=self.reasks,
            on_attempt=ctx.record_attempt,
            pack=pack,
        )
        ctx.usage = ctx.usage + result.usage
        if result.value is None:
            raise AgentFailed(
                f"agent {self.id}: no valid reply after {len(result.attempts)} attempts "
                f"({result.error})"
            )
        return result.value

    def _tool_room(self, budget: int) -> int:
        """Tokens kept free in the tool phase for the tool results (a quarter of the budget)."""
        return budget // 4

    def _sized_context(self, budget: int) -> ToolContext:
        # Results must fit the room kept for them; ~2.5 characters per token is conservative.
        per_call = int(self._tool_room(budget) * 2.5) // max(1, self.tool_policy.max_calls)
        limit = max(200, min(self.tool_context.max_result_chars, per_call))
        return self.tool_context.model_copy(update={"max_result_chars": limit})


def _ranked(same_round: Sequence[MemoryItem], memory: Sequence[MemoryItem]) -> list[MemoryItem]:
    fresh = sorted(same_round, key=lambda m: -(m.score or 0.0))
    older = sorted(memory, key=lambda m: (-m.round, -(m.score or 0.0)))
    return [*fresh, *older]
