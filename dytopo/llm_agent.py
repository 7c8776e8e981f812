"""The LLM-backed agent: role card + backend, strict four-field JSON each round."""

from __future__ import annotations

from collections.abc import Sequence

from dytopo.agent import Agent, AgentOutput, StepContext
from dytopo.backends.base import Backend
from dytopo.backends.types import ChatMessage, ChatRequest, Sampling
from dytopo.cards import RoleCard
from dytopo.errors import AgentFailed
from dytopo.memory import MemoryItem
from dytopo.prompting import fit
from dytopo.structured import ask_structured

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
    ) -> None:
        super().__init__(id, card.name)
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

    def messages(self, ctx: StepContext, notes: Sequence[str]) -> list[ChatMessage]:
        """The prompt, with `notes` (rendered memory, already in display order) included."""
        user = [f"TASK:\n{ctx.task}", f"ROUND {ctx.round} GOAL (from the manager):\n{ctx.goal}"]
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
        texts = [item.render() for item in ranked]

        def build(kept: Sequence[str]) -> list[ChatMessage]:
            chosen = sorted(ranked[: len(kept)], key=lambda item: order[id(item)])
            return self.messages(ctx, [item.render() for item in chosen])

        messages, dropped = await fit(
            self.backend,
            build,
            texts,
            budget=budget,
            max_output_tokens=self.max_output_tokens,
            who=f"agent {self.id}",
        )
        ctx.dropped.extend(dropped)
        request = ChatRequest(
            messages=messages,
            max_tokens=self.max_output_tokens,
            sampling=self.sampling,
            tag=self.id,
        )
        result = await ask_structured(
            self.backend, request, AgentOutput, reasks=self.reasks, on_attempt=ctx.attempts.append
        )
        ctx.usage = ctx.usage + result.usage
        if result.value is None:
            raise AgentFailed(
                f"agent {self.id}: no valid reply after {len(result.attempts)} attempts "
                f"({result.error})"
            )
        return result.value


def _ranked(same_round: Sequence[MemoryItem], memory: Sequence[MemoryItem]) -> list[MemoryItem]:
    fresh = sorted(same_round, key=lambda m: -(m.score or 0.0))
    older = sorted(memory, key=lambda m: (-m.round, -(m.score or 0.0)))
    return [*fresh, *older]
