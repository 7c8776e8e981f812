"""The LLM-backed agent: role card + backend, strict four-field JSON each round."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dytopo.agents.base import PRIVATE_CHARS, Agent, AgentOutput, StepContext
from dytopo.agents.cards import RoleCard
from dytopo.agents.prompting import SAFETY_MARGIN, Packer, Timeline
from dytopo.agents.structured import ask_structured
from dytopo.agents.tool_loop import ToolPolicy, run_tools, tool_notes
from dytopo.backends.base import Backend
from dytopo.backends.types import ChatMessage, ChatRequest, Sampling
from dytopo.tools.context import ToolContext
from dytopo.tools.executor import ToolExecutor, ToolOutcome
from dytopo.tools.registry import Tool

# No placeholder JSON here: small models copy placeholders verbatim. The server's JSON-schema
# constraint already fixes the shape; the prompt only has to name the keys.
FORMAT = (
    "The task is the team's: each round, do only your own role's part of it and of the "
    "round's goal. Reply with one JSON object with four string "
    "keys: public (one sentence for everyone: what you did), private (your actual work, sent "
    "only to the teammates who need it), query (one sentence: the specific thing you need "
    "from a teammate now) and key (one sentence: the specific thing your private work gives). "
    "query and key decide who receives your work: name this task's own artifacts and names, "
    "and make them differ."
)
TEXT_FORMAT = (
    "The task is the team's: each round, do only your own role's part of it and of the "
    "round's goal. Write your work itself as plain prose, ready for your teammates to use "
    "(code goes in one fenced block)."
)
# The closing lines follow the round's goal, the first new text of a prompt, so the server
# processes them again every round: they stay short, and FORMAT (cached) says the rest.
CLOSING = "Do your part for this round's goal now, as one JSON object."
MEMORY = "YOUR MEMORY (your reports and messages routed to you, oldest first):"
OWN = "YOUR LATEST WORK (revise it; do not copy this heading):"
FAILED = "IT FAILED ITS CHECK (change it so that it passes; the same work fails again):"
FRESH = "MESSAGES THIS ROUND (from agents before you in this round):"
WORK = "Do your part for this round's goal now: write your work itself, as plain text."
DESCRIBE = (
    "Now one JSON object about the work you just wrote, with the string keys public, query and key."
)
DESCRIBE_TOKENS = 200
"""max_tokens of the JSON about a text work product (three sentences)."""
DESCRIBE_ROOM = DESCRIBE_TOKENS + 48
"""Tokens kept free behind a text work product: the JSON's request (about 30) and reply."""
ANSWER_TOKENS = 64
"""Room for the request for the answer after the tool phase (about 40 tokens)."""


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
        text_work: bool = False,
    ) -> None:
        super().__init__(id, card.name, card.description)
        self.text_work = text_work
        """Write the private work as plain text first, then the JSON about it (see step)."""
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

    def _closing(self) -> str:
        return WORK if self.text_work else CLOSING

    def system_prompt(self) -> str:
        parts = [
            self.card.prompt,
            self.instructions.strip(),
            TEXT_FORMAT if self.text_work else FORMAT,
        ]
        return "\n\n".join(p for p in parts if p)

    def messages(
        self,
        ctx: StepContext,
        memory: Sequence[str],
        task: str | None = None,
        *,
        fresh: Sequence[str] = (),
        notes: Sequence[str] = (),
        own: Sequence[str] = (),
    ) -> list[ChatMessage]:
        """The prompt, laid out for the server's prompt cache: what never changes first (system,
        task), then `memory` (rendered, oldest first: it only grows, so this round's prompt up
        to the end of its memory starts next round's prompt), then what is new this round
        (its `own` latest work, to revise rather than retype from scratch; `fresh` messages
        from earlier tiers; tool `notes`), the round's goal and the closing instruction last."""
        user = [f"TASK:\n{task if task is not None else ctx.task}"]
        if memory:
            user.append(MEMORY + "\n" + "\n".join(memory))
        if own:
            user.append(OWN + "\n" + "\n".join(own))
        if fresh:
            user.append(FRESH + "\n" + "\n".join(fresh))
        if notes:
            user.append("TOOL RESULTS:\n" + "\n".join(notes))
        user += [f"ROUND {ctx.round} GOAL:\n{ctx.goal}", self._closing()]
        return [
            ChatMessage(role="system", content=self.system_prompt()),
            ChatMessage(role="user", content="\n\n".join(user)),
        ]

    def _layout(
        self, ctx: StepContext, budget: int, notes: Sequence[str] = ()
    ) -> tuple[Timeline, Callable[[str, Sequence[str]], list[ChatMessage]]]:
        """What packing may drop, and how kept items make the prompt. `notes`: tool results,
        most recent first; kept before this round's messages, which are kept before memory."""
        # Most valuable first among this round's messages: the best-matching edges.
        ranked = sorted(ctx.same_round, key=lambda m: -(m.score or 0.0))
        own = [ctx.own_work.text] if ctx.own_work is not None else []
        if own and ctx.failed_check:
            # Next to the work it judges, not in memory: a 1.5B developer shown its failed
            # check only in memory rewrote the same broken function three rounds running.
            own = [f"{own[0]}\n\n{FAILED}\n{ctx.failed_check}"]
        shown_memory = [
            item.render()
            for item in ctx.memory
            if not (own and ctx.failed_check and item.text == ctx.failed_check)
        ]
        timeline = Timeline.for_budget(
            budget,
            shown_memory,
            [*own, *notes, *(item.render() for item in ranked)],
        )

        def build(task: str, kept: Sequence[str]) -> list[ChatMessage]:
            fresh, memory = timeline.split(kept)
            kept_own = own[:fresh]
            kept_notes = notes[: fresh - len(kept_own)]
            kept_ids = {id(item) for item in ranked[: fresh - len(kept_own) - len(kept_notes)]}
            shown = [item.render() for item in ctx.same_round if id(item) in kept_ids]
            return self.messages(
                ctx, memory, task, fresh=shown, notes=kept_notes[::-1], own=kept_own
            )

        return timeline, build

    async def step(self, ctx: StepContext) -> AgentOutput:
        with ctx.counting():  # also when called outside a swarm
            return await self._step(ctx)

    async def _step(self, ctx: StepContext) -> AgentOutput:
        budget = self.context_budget or (await self.backend.connect()).n_ctx_per_slot
        outcomes: list[ToolOutcome] = []
        if self.tools:
            request, packer, pinned = await self._tool_step(ctx, budget, outcomes)
        else:
            packer, pinned = self._packer(ctx, budget), []
            request = self._request(await packer())
        if self.text_work:
            work = await self._text_step(ctx, request, packer, pinned)
            return with_evidence(work, outcomes)

        async def pack(extra: Sequence[ChatMessage]) -> list[ChatMessage]:
            return await packer([*pinned, *extra])

        result = await ask_structured(
            self.backend,
            request,
            AgentOutput,
            reasks=self.reasks,
            on_attempt=ctx.record_attempt,
            pack=pack,
        )
        return with_evidence(result.required(f"agent {self.id}"), outcomes)

    async def _text_step(
        self, ctx: StepContext, request: ChatRequest, packer: Packer, pinned: list[ChatMessage]
    ) -> AgentOutput:
        """The work as plain text, then the JSON about it in the same conversation (its prompt
        is the first one's continuation, so the server reuses all of it). Code and drafts
        written as text come out whole; inside a JSON string a 1.5B model dropped the code
        and kept only its note on what changed, or turned a docstring's quotes into fences."""
        # The work's cap leaves room behind it for the JSON request and its reply, so that
        # request is this one's continuation. Packed for the work's own output alone, a
        # SmolLM2 analyst that wrote to its 800-token cap could not be asked about it
        # (1257 pinned tokens, 1232 free): every agent of the round failed.
        used = await self.backend.count_tokens(request.messages, request.tools)
        room = packer.budget - used - SAFETY_MARGIN - DESCRIBE_ROOM
        cap = min(request.max_tokens, max(request.max_tokens // 2, room))
        reply = await self.backend.chat(request.model_copy(update={"max_tokens": cap}))
        work = (reply.content or "").strip()[:PRIVATE_CHARS]
        await ctx.work_done(work)
        if ctx.settled:  # the run ends with this work: nothing left to route
            return AgentOutput(public=ctx.settled[:240], private=work, query="", key="")
        about = [
            *pinned,
            ChatMessage(role="assistant", content=work or "(nothing)"),
            ChatMessage(role="user", content=DESCRIBE),
        ]
        describe = packer.follow_up(max_output_tokens=DESCRIBE_TOKENS)

        async def describe_pack(extra: Sequence[ChatMessage]) -> list[ChatMessage]:
            return await describe([*about, *extra])

        described = request.model_copy(
            update={"messages": await describe_pack(()), "max_tokens": DESCRIBE_TOKENS}
        )
        result = await ask_structured(
            self.backend,
            described,
            Descriptors,
            reasks=self.reasks,
            on_attempt=ctx.record_attempt,
            pack=describe_pack,
        )
        fields = result.required(f"agent {self.id}")
        return AgentOutput(public=fields.public, private=work, query=fields.query, key=fields.key)

    def _packer(
        self,
        ctx: StepContext,
        budget: int,
        *,
        notes: Sequence[str] = (),
        max_output_tokens: int | None = None,
        reserve: int = 0,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Packer:
        timeline, build = self._layout(ctx, budget, notes)
        return Packer(
            self.backend,
            build,
            ctx.task,
            timeline.droppable,
            budget=budget,
            max_output_tokens=max_output_tokens or self.max_output_tokens,
            reserve=reserve,
            who=f"agent {self.id}",
            tools=tools,
            report=ctx.packing,
            dropped=ctx.dropped,
            levels=timeline.levels(),
        )

    def _request(self, messages: list[ChatMessage], **extra: Any) -> ChatRequest:
        return ChatRequest(
            messages=messages,
            max_tokens=self.max_output_tokens,
            sampling=self.sampling,
            tag=self.id,
            **extra,
        )

    async def _tool_step(
        self, ctx: StepContext, budget: int, outcomes: list[ToolOutcome]
    ) -> tuple[ChatRequest, Packer, list[ChatMessage]]:
        """The tool phase, then the request for the answer, which continues the same
        conversation: the tool phase's prompt, its tool-call turns and results, and a short
        request for the JSON, so the server reuses everything the tool phase processed.

        The answer is sent with the same `tools` (the chat template renders them into the
        system prompt: without them the prompt would differ from its first line on) and
        `tool_choice="none"` beside the JSON-schema `response_format`. Checked on the embedded
        llama-server (SmolLM2 + the shipped ChatML tools template): `/apply-template` renders
        the tool phase's prompt as an exact prefix of the answer's, the reply is the plain
        schema-constrained object (an enum-only schema came back exact), and the answer's
        `cache_n` covered the whole tool-phase prompt. Without `tools` the two prompts shared
        only the system prompt's first line.
        """
        definitions = [t.definition() for t in self.tools]
        tool_pack = self._packer(
            ctx,
            budget,
            max_output_tokens=self.tool_policy.max_tokens,
            reserve=self._tool_reserve(budget),
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
        ctx.attempts.extend(phase.attempts)
        outcomes.extend(phase.outcomes)
        answer = tool_pack.follow_up(max_output_tokens=self.max_output_tokens)
        after = ChatMessage(role="user", content=f"Those are your tool results. {self._closing()}")
        pinned = [*phase.turns, after] if phase.turns else []
        messages = await answer.behind(pinned)
        if messages is not None:
            return self._request(messages, tools=definitions, tool_choice="none"), answer, pinned
        # The tool turns do not fit behind the prompt: the results go into a new prompt as
        # notes, packed like memory (this round's, so kept before old memory).
        notes_pack = self._packer(ctx, budget, notes=tool_notes(phase.outcomes))
        return self._request(await notes_pack()), notes_pack, []

    def _tool_reserve(self, budget: int) -> int:
        """Tokens the tool phase's prompt leaves free beyond its own output: the room for the
        tool results, and for the answer that continues the conversation (its request for the
        JSON and its longer output)."""
        extra_output = max(0, self.max_output_tokens - self.tool_policy.max_tokens)
        return self._tool_room(budget) + extra_output + ANSWER_TOKENS

    def _tool_room(self, budget: int) -> int:
        """Tokens kept free in the tool phase for the tool results (a quarter of the budget)."""
        return budget // 4

    def _sized_context(self, budget: int) -> ToolContext:
        # Results must fit the room kept for them; ~2.5 characters per token is conservative.
        per_call = int(self._tool_room(budget) * 2.5) // max(1, self.tool_policy.max_calls)
        limit = max(200, min(self.tool_context.max_result_chars, per_call))
        return self.tool_context.model_copy(update={"max_result_chars": limit})


class Descriptors(BaseModel):
    """The JSON about a work product written as text (`text_work`)."""

    model_config = ConfigDict(extra="forbid")

    public: str = Field(max_length=240)
    query: str = Field(max_length=160)
    key: str = Field(max_length=160)


EVIDENCE = "TOOL RESULTS (recorded by DyTopo):"
EVIDENCE_CHARS = 600
"""Characters of each tool result copied into the report (its tail: where errors are)."""


def with_evidence(output: AgentOutput, outcomes: Sequence[ToolOutcome]) -> AgentOutput:
    """The agent's report with what its tools returned appended, so whoever reads its work (the
    manager deciding to halt, an agent it is routed to) sees the evidence itself, not only the
    agent's account of it (measured: a 1.5B tester wrote "Here are my results:" and none)."""
    if not outcomes:
        return output
    lines = []
    for o in outcomes:
        text = " ".join(o.result.split())
        if len(text) > EVIDENCE_CHARS:
            text = text[:80] + " … " + text[-(EVIDENCE_CHARS - 83) :]
        lines.append(f"- {o.tool}: {text}" if o.ok else f"- {o.tool} refused: {text}")
    evidence = (EVIDENCE + "\n" + "\n".join(lines))[: PRIVATE_CHARS // 2]
    room = PRIVATE_CHARS - len(evidence) - 2
    private = output.private.strip()[:room]
    return output.model_copy(update={"private": f"{private}\n\n{evidence}".strip()})
