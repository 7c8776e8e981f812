"""The examples run in CI: their main logic on a scripted backend and the hashing embedder."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from helpers import decision, goal, step
from trace_checks import check_trace

from dytopo import HashEmbedder, load_card
from dytopo.swarm.trace import read_trace
from dytopo.testing import ScriptedBackend

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prompt_of(backend: ScriptedBackend, tag: str, index: int) -> str:
    return [r for r in backend.requests if r.tag == tag][index].messages[-1].content or ""


RESTATED = "The pen problem restated: 3 pens cost 2 euros and 18 pens are wanted."
PRICE = "The computed price of 18 pens in euros."
CHECK = "A check of the final price of the pens."
ANSWER = "18 pens are 6 groups of 3, so they cost 6 x 2 = 12 euros."


async def test_swarm_in_code_compares_two_modes(tmp_path: Path) -> None:
    module = example("swarm_in_code")
    runs = len(module.MODES)
    backend = ScriptedBackend(
        by_tag={
            "parser": [step("restated", "GIVENS: 3 pens = 2 euros", CHECK, RESTATED)] * 2 * runs,
            "solver": [step("solved", "18 / 3 * 2 = 12", RESTATED, PRICE)] * 2 * runs,
            "verifier": [step("checked", "12 euros is right", PRICE, CHECK)] * 2 * runs,
            "manager": [goal("Solve it."), decision(False), decision(True, ANSWER)] * runs,
        }
    )
    results = await module.compare_modes(backend, HashEmbedder(), trace_dir=tmp_path)
    backend.assert_complete()

    assert list(results) == ["dynamic", "broadcast"]
    for mode, result in results.items():
        assert (result.final_answer, result.halt_reason, len(result.rounds)) == (
            ANSWER,
            "manager",
            2,
        )
        check_trace(read_trace(tmp_path / f"in_code_{mode}.jsonl"), rounds=2)
    dynamic = {(e.source, e.target) for e in results["dynamic"].rounds[0].routing.edges}
    assert {("parser", "solver"), ("solver", "verifier"), ("verifier", "parser")} <= dynamic
    assert [len(r.routing.edges) for r in results["broadcast"].rounds] == [6, 6]
    # The agents speak with the shipped role cards, and read what was routed to them.
    system = next(r for r in backend.requests if r.tag == "solver").messages[0].content or ""
    assert system.startswith(load_card("solver").prompt)
    assert "GIVENS: 3 pens = 2 euros" in prompt_of(backend, "solver", 1)


async def test_custom_agent_feeds_its_facts_to_the_llm_agents(tmp_path: Path) -> None:
    module = example("custom_agent")
    comparison = "The analyst's comparison of LRU and LFU for the report."
    facts_wanted = "Reference facts about LRU and LFU cache eviction policies."  # what it offers
    backend = ScriptedBackend(
        by_tag={
            "analyst": [step("compared", "LRU suits recency", facts_wanted, comparison)] * 2,
            "writer": [step("wrote", "three sentences", comparison, "The finished report.")] * 2,
            "manager": [goal("Compare them."), decision(False), decision(True, "LRU vs LFU")],
        }
    )
    trace = tmp_path / "custom.jsonl"
    result = await module.explain(backend, HashEmbedder(), trace_path=trace)
    backend.assert_complete()

    assert (result.final_answer, result.halt_reason) == ("LRU vs LFU", "manager")
    librarian = [st for r in result.rounds for st in r.steps if st.agent == "librarian"]
    assert [st.ok for st in librarian] == [True, True]
    assert librarian[0].output is not None
    assert librarian[0].output.private == "\n".join(module.FACTS.values())
    edges = {(e.source, e.target) for e in result.rounds[0].routing.edges}
    assert {("librarian", "analyst"), ("analyst", "writer")} <= edges
    assert module.FACTS["lfu"] in prompt_of(backend, "analyst", 1)
    check_trace(read_trace(trace), rounds=2)
