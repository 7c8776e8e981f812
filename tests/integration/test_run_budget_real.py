"""`run_token_budget` against the real server's own token counts."""

from __future__ import annotations

from pathlib import Path

from dytopo.agents.answer import AnswerSpec
from dytopo.loader import load_topology
from dytopo.managed import ManagedStack
from dytopo.runner import arun
from dytopo.swarm.trace import read_trace

ROOT = Path(__file__).resolve().parents[2]
CAP = 4000


async def test_the_token_cap_holds_as_the_server_counts(
    stack: ManagedStack, tmp_path: Path
) -> None:
    research = load_topology(ROOT / "topologies" / "research.yaml")
    # A short final answer keeps the test quick on CPU; the reserve (half the cap) leaves room
    # for the opening goal and about one round of two agents.
    manager = research.manager.model_copy(
        update={"budget": research.manager.budget.model_copy(update={"max_output_tokens": 400})}
    )
    topology = research.model_copy(
        update={
            # One request per step (JSON work), as this cap was sized for.
            "agents": [a.model_copy(update={"text_work": False}) for a in research.agents[:2]],
            "answer": AnswerSpec(),  # its writer is not among the two
            "manager": manager,
            "run_token_budget": CAP,
            "max_rounds": 3,
            "min_rounds": 3,
        }
    )
    trace = tmp_path / "trace.jsonl"
    result = await arun(
        topology,
        "Compare B-trees and LSM-trees for a write-heavy key-value store.",
        backend_url=stack.chat_url,
        embed_url=stack.embed_url,
        trace_path=trace,
        base_dir=ROOT / "topologies",
    )
    biggest = max(
        [a.budget.max_output_tokens for a in topology.agents]
        + [topology.manager.budget.max_output_tokens]
    )
    used = result.usage.prompt_tokens + result.usage.completion_tokens
    # The server's own counts (usage comes from its replies): at most one request over the cap.
    print(f"cap {CAP}: used {used}, largest max_tokens {biggest}, rounds {len(result.rounds)}")
    assert used <= CAP + biggest, (used, CAP, biggest)
    assert result.halt_reason == "budget"
    assert result.final_answer.strip()
    events = read_trace(trace)
    stop = next(e for e in events if e["event"] == "budget_stop")
    assert stop["run_token_budget"] == CAP
    # Which of the cap's two stops comes first depends on the model's reply lengths and on
    # which request asks first: a refused request (an agent's or the manager's; one line naming
    # the fix), or the forecast that the next round would eat the final answer's reserve.
    steps = [st for r in result.rounds for st in r.steps]
    refused = [st for st in steps if "run_token_budget" in st.error]
    assert all("raise run_token_budget" in st.error for st in refused)
    assert len(refused) < len(steps), "the cap refused every agent request"
    if stop["refused"]:
        assert stop["refused"].startswith(f"run_token_budget {CAP}:"), stop
        assert "raise run_token_budget" in stop["refused"], stop
    else:
        assert not refused
        forecast = stop["used"] + stop["next_round_estimate"] + stop["final_answer_reserve"]
        assert forecast > CAP, stop
    end = events[-1]
    assert end["event"] == "run_end"
    assert end["halt_reason"] == "budget"
