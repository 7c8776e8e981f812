"""The manager: round goals, halt decisions, the final answer (all strict JSON)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from dytopo.agents.answer import AnswerSpec, Work
from dytopo.agents.base import StepContext
from dytopo.agents.cards import RoleCard
from dytopo.agents.prompting import Packer, Timeline
from dytopo.agents.structured import ask_structured
from dytopo.backends.base import Backend
from dytopo.backends.types import ChatMessage, ChatRequest, Sampling

M = TypeVar("M", bound=BaseModel)


class RoundGoal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    goal: str = Field(min_length=1, max_length=300)


class ManagerDecision(BaseModel):
    """The manager's verdict after a round."""

    model_config = ConfigDict(extra="forbid")

    goal_next: str = Field(max_length=240)
    halt: bool
    reason: str = Field(max_length=160)
    answer_from: str = Field(default="", max_length=40)
    """When halting: the agent whose latest work is the final answer, put in verbatim by the
    library ("": the manager's own `final_answer`)."""
    # A whole program (a HumanEval solution with its docstring) must fit: the JSON schema the
    # server enforces would cut a longer answer mid-code. max_output_tokens still bounds it.
    final_answer: str = Field(default="", max_length=6000)


class FinalAnswer(BaseModel):
    """The final answer when the run stops without a halt: an agent's work, or written."""

    model_config = ConfigDict(extra="forbid")

    answer_from: str = Field(default="", max_length=40)
    final_answer: str = Field(default="", max_length=6000)


class TeamMember(BaseModel):
    """An agent as the manager knows it: its id and what its role does."""

    id: str
    does: str = ""


class PublicMessage(BaseModel):
    round: int
    agent: str
    text: str

    def render(self) -> str:
        return f"[round {self.round}] {self.agent}: {self.text}"


class Manager(ABC):
    """Steers the swarm. `acct` collects usage, attempts and dropped context for the trace.

    `work` is each agent's latest work product (its last private message): the decision sees
    it, and a halt may name the agent whose work is the answer (`answer_from`), which the
    library then puts in verbatim."""

    def join(self, team: Sequence[TeamMember], answer: AnswerSpec) -> None:  # noqa: B027
        """Called once by the swarm: who is on the team and how the answer is made."""

    @abstractmethod
    async def open(self, task: str, acct: StepContext) -> str:
        """The first round's goal."""

    @abstractmethod
    async def decide(
        self,
        task: str,
        round: int,
        max_rounds: int,
        transcript: Sequence[PublicMessage],
        work: Sequence[Work],
        acct: StepContext,
    ) -> ManagerDecision:
        """After a round: next goal, whether to halt, why, and the answer when halting."""

    @abstractmethod
    async def final(
        self,
        task: str,
        transcript: Sequence[PublicMessage],
        work: Sequence[Work],
        acct: StepContext,
    ) -> FinalAnswer:
        """The final answer when the run stops without a halt."""


FORMAT = (
    "Each request ends with the duty it asks for. Reply with one JSON object with these keys:\n"
    "- round goal: goal (one or two sentences: what each agent, named by its id, does next);\n"
    "- decision after a round: {decision};\n"
    "- final answer: {final}."
)
DECIDE = (
    "goal_next (the next round's goal), halt (true only when the task is done and the work "
    "checked), reason (one sentence)"
)
CHOOSE = (
    "answer_from (when halting: the id of the agent whose latest work, as shown, is the final "
    'answer; "" when none is) and final_answer (only when answer_from is "": the complete answer)'
)
FIXED = "The final answer is {agent}'s latest work, copied in for you: never write it."
# The duty line comes after the newest messages, so the server processes it again in every
# request: it stays short, and FORMAT (cached with the system prompt) names the keys.
ASK = {
    "goal": "Duty now: the round goal.",
    "decide": "Duty now: the decision after this round.",
    "final": "Duty now: the final answer.",
}
WORK_CHARS = 2400
"""Characters of each agent's latest work shown to the manager (a whole function fits)."""


class LLMManager(Manager):
    """The manager as one structured chat request per duty."""

    def __init__(
        self,
        card: RoleCard,
        backend: Backend,
        *,
        instructions: str = "",
        max_output_tokens: int = 1200,
        context_budget: int | None = None,
        sampling: Sampling | None = None,
        reasks: int = 2,
    ) -> None:
        self.card = card
        self.backend = backend
        self.instructions = instructions
        self.max_output_tokens = max_output_tokens
        self.context_budget = context_budget
        self.sampling = sampling or Sampling(temperature=0.3)
        self.reasks = reasks
        self.team: list[TeamMember] = []
        self.answer = AnswerSpec()
        self._decision: type[BaseModel] = ManagerDecision
        self._final: type[BaseModel] = FinalAnswer

    def join(self, team: Sequence[TeamMember], answer: AnswerSpec) -> None:
        self.team, self.answer = list(team), answer
        self._decision, self._final = reply_models([m.id for m in team], answer)

    async def open(self, task: str, acct: StepContext) -> str:
        head = ["No agent has spoken yet."]
        reply = await self._ask(RoundGoal, "goal", task, head, [], [], acct)
        return reply.goal

    async def decide(
        self,
        task: str,
        round: int,
        max_rounds: int,
        transcript: Sequence[PublicMessage],
        work: Sequence[Work],
        acct: StepContext,
    ) -> ManagerDecision:
        head = [f"Round {round} of at most {max_rounds} has finished."]
        reply = await self._ask(self._decision, "decide", task, head, transcript, work, acct)
        return ManagerDecision.model_validate(reply.model_dump())

    async def final(
        self,
        task: str,
        transcript: Sequence[PublicMessage],
        work: Sequence[Work],
        acct: StepContext,
    ) -> FinalAnswer:
        head = ["The run is over: give the final answer now."]
        reply = await self._ask(self._final, "final", task, head, transcript, work, acct)
        return FinalAnswer.model_validate(reply.model_dump())

    def system_prompt(self) -> str:
        """One system prompt for every duty (the duty is named last), so all requests share it."""
        roster = ""
        if self.team:
            lines = [f"- {m.id}: {m.does}" if m.does else f"- {m.id}" for m in self.team]
            roster = "YOUR TEAM (name agents only by these ids):\n" + "\n".join(lines)
        if self.answer.source is not None:
            decision, final = DECIDE, "no request asks for it"
            fixed = FIXED.format(agent=self.answer.source)
        else:
            decision, final = f"{DECIDE}, {CHOOSE}", CHOOSE
            fixed = ""
        fmt = FORMAT.format(decision=decision, final=final)
        parts = (self.card.prompt, roster, self.instructions.strip(), fixed, fmt)
        return "\n\n".join(p for p in parts if p)

    async def _ask(
        self,
        model: type[M],
        duty: str,
        task: str,
        head: list[str],
        transcript: Sequence[PublicMessage],
        work: Sequence[Work],
        acct: StepContext,
    ) -> M:
        # Laid out for the server's prompt cache: system and task, then the public messages
        # (oldest first: the transcript only grows, so one request's transcript starts the
        # next one's), then what is new (the team's latest work), the head and the duty last.
        budget = self.context_budget or (await self.backend.connect()).n_ctx_per_slot
        shown = [w.render(WORK_CHARS) for w in work]
        timeline = Timeline.for_budget(budget, [m.render() for m in transcript], shown)

        def build(task_text: str, kept: Sequence[str]) -> list[ChatMessage]:
            fresh, publics = timeline.split(kept)
            body = [f"TASK:\n{task_text}"]
            if publics:
                body.append("PUBLIC MESSAGES (oldest first):\n" + "\n".join(publics))
            if fresh:
                body.append("TEAM'S LATEST WORK:\n" + "\n\n".join(shown[:fresh]))
            body += [*head, ASK[duty]]
            return [
                ChatMessage(role="system", content=self.system_prompt()),
                ChatMessage(role="user", content="\n\n".join(body)),
            ]

        pack = Packer(
            self.backend,
            build,
            task,
            timeline.droppable,
            budget=budget,
            max_output_tokens=self.max_output_tokens,
            who="manager",
            report=acct.packing,
            dropped=acct.dropped,
            levels=timeline.levels(),
        )
        request = ChatRequest(
            messages=await pack(),
            max_tokens=self.max_output_tokens,
            sampling=self.sampling,
            tag="manager",
        )
        with acct.counting():
            result = await ask_structured(
                self.backend,
                request,
                model,
                reasks=self.reasks,
                on_attempt=acct.record_attempt,
                pack=pack,
            )
        return result.required("manager", model.__name__)


def reply_models(ids: Sequence[str], answer: AnswerSpec) -> tuple[type[BaseModel], type[BaseModel]]:
    """The decision and final-answer replies the server's JSON schema enforces for this team:
    `answer_from` can only name one of its agents (or ""); with the answer fixed by the
    topology, neither reply carries an answer (the manager writes no code it would garble)."""
    config = ConfigDict(extra="forbid")
    goal_next = (str, Field(max_length=240))
    reason = (str, Field(max_length=160))
    if answer.source is not None:
        decision = create_model(
            "ManagerDecision",
            __config__=config,
            goal_next=goal_next,
            halt=(bool, ...),
            reason=reason,
        )
        return decision, FinalAnswer
    chosen: Any = Literal[("", *ids)] if ids else str
    answer_from = (chosen, Field(default="", max_length=40) if chosen is str else "")
    text = (str, Field(default="", max_length=6000))
    decision = create_model(
        "ManagerDecision",
        __config__=config,
        goal_next=goal_next,
        halt=(bool, ...),
        reason=reason,
        answer_from=answer_from,
        final_answer=text,
    )
    final = create_model(
        "FinalAnswer", __config__=config, answer_from=answer_from, final_answer=text
    )
    return decision, final
