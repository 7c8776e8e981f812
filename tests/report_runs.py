"""Runs whose traces the report tests render: real swarms on the scripted backend (so the
tests break when the trace format changes), and cuts of those traces as a crash leaves them."""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict, deque
from pathlib import Path

from dytopo.agents.base import AgentOutput, FunctionAgent, StepContext
from dytopo.agents.cards import RoleCard
from dytopo.agents.llm import LLMAgent
from dytopo.agents.manager import LLMManager
from dytopo.backends.types import ChatRequest, ToolCall
from dytopo.embedders import HashEmbedder
from dytopo.errors import BackendUnavailable, RunError
from dytopo.routing.config import RoutingConfig
from dytopo.swarm.loop import Swarm
from dytopo.testing import Reply, ScriptedBackend, ScriptItem
from dytopo.tools import tool

IDS = ["researcher", "analyst", "critic", "writer"]
HOSTILE = (
    '</script><script>alert("x")</script><svg onload=alert(1)>'
    "<img src=x onerror=alert(2)><style>body{display:none}</style>"
)

# Per round, each agent's (need, offer): the graph differs from round to round.
NEEDS_OFFERS = [
    {
        "researcher": ("a critique of the plan", "sourced facts about cache eviction"),
        "analyst": ("facts about cache eviction", "trade offs of LRU and LFU"),
        "critic": ("a first draft of the report", "a critique of the draft plan"),
        "writer": ("trade offs and sourced facts", "a first draft report"),
    },
    {
        "researcher": ("open questions to check", "benchmark numbers for LFU"),
        "analyst": ("benchmark numbers", "a recommendation with reasons"),
        "critic": ("a recommendation with reasons", "open questions to check"),
        "writer": ("numbers and a recommendation", "walrus zebra"),
    },
    {
        "researcher": ("nothing more", "final sources list"),
        "analyst": ("final sources list", "verdict table"),
        "critic": ("verdict table", "approval"),
        "writer": ("approval and verdict table", "the final report"),
    },
]


@tool
def lookup(topic: str) -> str:
    """Look a topic up in the notes.

    Args:
        topic: what to look up.
    """
    return f"notes on {topic}: LRU evicts the least recently used entry"


def step_reply(agent: str, t: int, hostile: str = "", marker: str = "") -> str:
    need, offer = NEEDS_OFFERS[(t - 1) % len(NEEDS_OFFERS)][agent]
    public = f"{agent} round {t}: progress {marker}" + (f" {hostile}" if hostile else "")
    # Long enough that the critic's small context drops older messages (packing shows).
    private = f"{agent.upper()}-{t} details" + " with its supporting notes" * 12
    private += f" {hostile}" if hostile else ""
    return json.dumps({"public": public, "private": private, "query": need, "key": offer})


class Script:
    """Replies by tag: agents answer per round, the researcher looks a topic up first, the
    analyst's first reply of round 1 is not JSON (one re-ask), the critic's small context drops
    older messages from round 2 on, the manager halts at the end."""

    def __init__(
        self, rounds: int, hostile: str = "", *, first_round: int = 1, marker: str = ""
    ) -> None:
        self.replies: dict[str, deque[ScriptItem]] = defaultdict(deque)
        for t in range(first_round, rounds + 1):
            for agent in IDS:
                if agent == "analyst" and t == 1:
                    self.replies[agent].append("this is not json")
                text = step_reply(agent, t, hostile if agent == "writer" else "", marker)
                self.replies[agent].append(Reply(text, cached_tokens=40 * t))
        manager = self.replies["manager"]
        if first_round == 1:
            manager.append(json.dumps({"goal": f"gather facts {hostile}"}))
        for t in range(first_round, rounds + 1):
            halt = t == rounds
            manager.append(
                json.dumps(
                    {
                        "goal_next": f"goal {t + 1}",
                        "halt": halt,
                        "reason": f"round {t} reviewed {hostile}",
                        "final_answer": f"FINAL ANSWER {hostile}" if halt else "",
                    }
                )
            )

    def __call__(self, request: ChatRequest) -> ScriptItem:
        if request.tools and request.tool_choice != "none":
            looked_up = any(m.role == "tool" for m in request.messages)
            call = ToolCall(id="1", name="lookup", arguments='{"topic": "LFU"}')
            return Reply("") if looked_up else Reply(tool_calls=[call])
        return self.replies[request.tag or ""].popleft()


def swarm(backend: ScriptedBackend, rounds: int, tau: float = 0.3) -> Swarm:
    def card(name: str) -> RoleCard:
        return RoleCard(name=name, prompt=f"You are the {name}.")

    agents = [
        LLMAgent(a, card(a), backend, reasks=1, tools=[lookup] if a == "researcher" else [])
        for a in IDS
    ]
    critic = agents[IDS.index("critic")]
    critic.context_budget, critic.max_output_tokens = 480, 200
    return Swarm(
        agents,
        LLMManager(card("manager"), backend, reasks=1),
        HashEmbedder(),
        routing=RoutingConfig(tau=tau, force_connect=True),
        max_rounds=rounds,
        min_rounds=rounds,
        name="report-test",
    )


async def scripted_run(trace: Path, rounds: int = 3, hostile: str = "") -> Path:
    """A complete run of `rounds` rounds, its trace at `trace`."""
    backend = ScriptedBackend(responder=Script(rounds, hostile))
    await swarm(backend, rounds).run(f"Compare LRU and LFU {hostile}", trace_path=trace)
    return trace


def crashed_copy(trace: Path, out: Path, round: int) -> Path:
    """The trace as a crash in `round` leaves it: cut after that round's routing, the last
    line torn in half, no round_end and no run_end."""
    lines = trace.read_text(encoding="utf-8").splitlines(keepends=True)
    cut = next(
        k
        for k, line in enumerate(lines)
        if json.loads(line)["event"] == "routing" and json.loads(line)["round"] == round
    )
    kept = lines[: cut + 1]
    torn = lines[cut + 1][: len(lines[cut + 1]) // 2]
    out.write_text("".join(kept) + torn, encoding="utf-8")
    return out


GONE = BackendUnavailable("server gone after 6 attempts", url="scripted://")


async def crashed_and_resumed(trace: Path) -> Path:
    """A 3-round run whose server dies in round 2's manager decision, resumed: round 2 is in
    the trace twice, and the resumed copy's public messages say "again"."""
    first = Script(3)
    manager = first.replies["manager"]
    first.replies["manager"] = deque([manager[0], manager[1], GONE])
    with contextlib.suppress(RunError):
        await swarm(ScriptedBackend(responder=first), 3).run("Compare", trace_path=trace)
    again = Script(3, first_round=2, marker="again")
    await swarm(ScriptedBackend(responder=again), 3).resume(trace)
    return trace


async def wide_run(trace: Path, agents: int) -> Path:
    """One round of `agents` function agents: each offers one of 30 topics and needs another,
    so every agent receives from about agents/30 others."""

    def agent(k: int) -> FunctionAgent:
        async def answer(ctx: StepContext) -> AgentOutput:
            return AgentOutput(
                public=f"agent {k} done",
                private=f"work of {k}",
                query=f"topic{(k * 7) % 30} material",
                key=f"topic{k % 30} material",
            )

        return FunctionAgent(f"agent{k:03d}", answer)

    replies = [
        json.dumps({"goal": "go"}),
        json.dumps({"goal_next": "", "halt": True, "reason": "done", "final_answer": "ok"}),
    ]
    backend = ScriptedBackend(script=replies)
    wide = Swarm(
        [agent(k) for k in range(agents)],
        LLMManager(RoleCard(name="manager", prompt="m"), backend, reasks=0),
        HashEmbedder(),
        routing=RoutingConfig(tau=0.5),
        max_rounds=1,
        min_rounds=1,
    )
    await wide.run("many agents", trace_path=trace)
    return trace
