"""The manager: round goals, halt decisions, the final answer (all strict JSON)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from dytopo.agent import StepContext
from dytopo.backends.base import Backend
from dytopo.backends.types import ChatMessage, ChatRequest, Sampling
from dytopo.cards import RoleCard
from dytopo.errors import AgentFailed
from dytopo.prompting import Packer, Timeline
from dytopo.structured import ask_structured

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
    # A whole program (a HumanEval solution with its docstring) must fit: the JSON schema the
    # server enforces would cut a longer answer mid-code. max_output_tokens still bounds it.
    final_answer: str = Field(max_length=6000)


class FinalAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    final_answer: str = Field(min_length=1, max_length=6000)


class PublicMessage(BaseModel):
    round: int
    agent: str
    text: str

    def render(self) -> str:
        return f"[round {self.round}] {self.agent}: {self.text}"


class Manager(ABC):
    """Steers the swarm. `acct` collects usage, attempts and dropped context for the trace."""

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
        acct: StepContext,
    ) -> ManagerDecision:
        """After a round: next goal, whether to halt, why, and the answer when halting."""

    @abstractmethod
    async def final(
        self,
        task: str,
        transcript: Sequence[PublicMessage],
        work: Sequence[str],
        acct: StepContext,
    ) -> str:
        """The final answer when the run stops without a halt; `work`: latest private messages."""


FORMAT = (
    "Each request ends with the duty it asks for. Reply with one JSON object with these keys:\n"
    "- round goal: goal (one or two sentences saying what each agent should do next);\n"
    "- decision after a round: goal_next (string), halt (boolean), reason (string) and "
    "final_answer (string, empty unless halt);\n"
    "- final answer: final_answer (the complete answer itself)."
)
# The duty line comes after the newest public messages, so the server processes it again in
# every request: it stays short, and FORMAT (cached with the system prompt) names the keys.
ASK = {
    RoundGoal: "Duty now: the round goal.",
    ManagerDecision: "Duty now: the decision after this round.",
    FinalAnswer: "Duty now: the final answer.",
}


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

    async def open(self, task: str, acct: StepContext) -> str:
        head = ["No agent has spoken yet."]
        reply = await self._ask(RoundGoal, task, head, [], [], acct)
        return reply.goal

    async def decide(
        self,
        task: str,
        round: int,
        max_rounds: int,
        transcript: Sequence[PublicMessage],
        acct: StepContext,
    ) -> ManagerDecision:
        head = [f"Round {round} of at most {max_rounds} has finished."]
        return await self._ask(ManagerDecision, task, head, transcript, [], acct)

    async def final(
        self,
        task: str,
        transcript: Sequence[PublicMessage],
        work: Sequence[str],
        acct: StepContext,
    ) -> str:
        head = ["The run is over: write the final answer now."]
        reply = await self._ask(FinalAnswer, task, head, transcript, work, acct)
        return reply.final_answer

    def system_prompt(self) -> str:
        """One system prompt for every duty (the duty is named last), so all requests share it."""
        return "\n\n".join(p for p in (self.card.prompt, self.instructions.strip(), FORMAT) if p)

    async def _ask(
        self,
        model: type[M],
        task: str,
        head: list[str],
        transcript: Sequence[PublicMessage],
        work: Sequence[str],
        acct: StepContext,
    ) -> M:
        # Laid out for the server's prompt cache: system and task, then the public messages
        # (oldest first: the transcript only grows, so one request's transcript starts the
        # next one's), then what is new (the team's latest work), the head and the duty last.
        budget = self.context_budget or (await self.backend.connect()).n_ctx_per_slot
        timeline = Timeline.for_budget(budget, [m.render() for m in transcript], work)

        def build(task_text: str, kept: Sequence[str]) -> list[ChatMessage]:
            fresh, publics = timeline.split(kept)
            body = [f"TASK:\n{task_text}"]
            if publics:
                body.append("PUBLIC MESSAGES (oldest first):\n" + "\n".join(publics))
            if fresh:
                body.append("TEAM'S LATEST WORK:\n" + "\n".join(work[:fresh]))
            body += [*head, ASK[model]]
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
        result = await ask_structured(
            self.backend,
            request,
            model,
            reasks=self.reasks,
            on_attempt=acct.record_attempt,
            pack=pack,
        )
        acct.usage = acct.usage + result.usage
        if result.value is None:
            raise AgentFailed(
                f"manager: no valid {model.__name__} after "
                f"{len(result.attempts)} attempts ({result.error})"
            )
        return result.value
