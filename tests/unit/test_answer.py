"""The final answer carries the team's work verbatim; the manager sees that work and its team."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from helpers import card, goal, step

from dytopo.agents.answer import AnswerSpec, extract, latest_work
from dytopo.agents.base import AgentOutput, StepContext
from dytopo.agents.llm import EVIDENCE, LLMAgent
from dytopo.agents.manager import LLMManager
from dytopo.backends.types import ToolCall
from dytopo.embedders import HashEmbedder
from dytopo.loader import load_topology
from dytopo.routing.config import RoutingConfig
from dytopo.swarm.loop import Swarm
from dytopo.swarm.result import AgentStep
from dytopo.swarm.trace import read_trace
from dytopo.testing import Reply, ScriptedBackend
from dytopo.tools import tool

CODE = 'def add(x, y):\n    """Sum."""\n    return x + y'
DEV_PRIVATE = f"```python\n{CODE}\n```\nChanged: first version."


def halt(reason: str = "tests passed", **extra: object) -> str:
    return json.dumps({"goal_next": "", "halt": True, "reason": reason, **extra})


def go_on(goal_next: str = "developer: fix it") -> str:
    return json.dumps({"goal_next": goal_next, "halt": False, "reason": "not checked yet"})


def swarm(backend: ScriptedBackend, answer: AnswerSpec | None = None, **options: object) -> Swarm:
    agents = [LLMAgent(i, card(i), backend, reasks=1) for i in ("developer", "tester")]
    return Swarm(
        agents,
        LLMManager(card("manager"), backend, reasks=1),
        HashEmbedder(),
        routing=RoutingConfig(mode="broadcast"),
        answer=answer,
        **options,
    )  # type: ignore[arg-type]


def dev_step(private: str = DEV_PRIVATE) -> str:
    return step("wrote add", private, "test results for add", "the add function code")


def qa_step(private: str = "3 tests passed") -> str:
    return step("tested add", private, "the add function code", "test results for add")


async def test_topology_answer_is_the_developers_code_verbatim(tmp_path: Path) -> None:
    backend = ScriptedBackend(
        by_tag={
            "manager": [goal("developer: write add; tester: test it"), halt()],
            "developer": [dev_step()],
            "tester": [qa_step()],
        }
    )
    trace = tmp_path / "t.jsonl"
    result = await swarm(backend, AnswerSpec(source="developer", extract="code"), min_rounds=1).run(
        "write add", trace_path=trace
    )
    backend.assert_complete()
    assert result.halt_reason == "manager"
    assert result.final_answer == f"```python\n{CODE}\n```"
    decision = [r for r in backend.requests if r.tag == "manager"][1]
    # The manager never writes the answer: its reply has no field for it ...
    assert decision.json_schema is not None
    assert set(decision.json_schema["properties"]) == {"goal_next", "halt", "reason"}
    # ... and it decides on the work itself, not only on the public lines.
    prompt = decision.messages[-1].content or ""
    assert "TEAM'S LATEST WORK" in prompt
    assert CODE in prompt
    assert "3 tests passed" in prompt
    events = [e for e in read_trace(trace) if e["event"] == "manager_decision"]
    assert events[0]["answer_source"] == "agent:developer"


async def test_at_max_rounds_the_topology_answer_needs_no_manager_request() -> None:
    backend = ScriptedBackend(
        by_tag={
            "manager": [goal("work"), go_on()],
            "developer": [dev_step()],
            "tester": [qa_step("1 failed")],
        }
    )
    result = await swarm(backend, AnswerSpec(source="developer"), max_rounds=1).run("t")
    backend.assert_complete()  # no final-answer request was scripted, none was made
    assert result.halt_reason == "max_rounds"
    assert result.final_answer == DEV_PRIVATE.strip()


async def test_manager_picks_an_agent_and_the_library_copies_its_work() -> None:
    backend = ScriptedBackend(
        by_tag={
            "manager": [goal("work"), halt(answer_from="developer", final_answer="see dev")],
            "developer": [dev_step()],
            "tester": [qa_step()],
        }
    )
    result = await swarm(backend, min_rounds=1).run("t")
    backend.assert_complete()
    assert result.final_answer == DEV_PRIVATE.strip()
    schema = [r for r in backend.requests if r.tag == "manager"][1].json_schema
    assert schema is not None
    # answer_from can only name this team's agents (the server enforces the enum).
    assert schema["properties"]["answer_from"]["enum"] == ["", "developer", "tester"]


async def test_manager_may_write_the_answer_when_it_names_no_agent() -> None:
    backend = ScriptedBackend(
        by_tag={
            "manager": [goal("work"), halt(answer_from="", final_answer="42")],
            "developer": [dev_step()],
            "tester": [qa_step()],
        }
    )
    result = await swarm(backend, min_rounds=1).run("t")
    assert result.final_answer == "42"


async def test_final_answer_at_max_rounds_can_name_an_agent() -> None:
    backend = ScriptedBackend(
        by_tag={
            "manager": [
                goal("work"),
                go_on(),
                json.dumps({"answer_from": "tester", "final_answer": ""}),
            ],
            "developer": [dev_step()],
            "tester": [qa_step("TESTS")],
        }
    )
    result = await swarm(backend, max_rounds=1).run("t")
    backend.assert_complete()
    assert result.final_answer == "TESTS"


async def test_the_manager_knows_its_team_by_id() -> None:
    backend = ScriptedBackend(
        by_tag={
            "manager": [goal("g"), halt(final_answer="x")],
            "developer": [dev_step()],
            "tester": [qa_step()],
        }
    )
    await swarm(backend, min_rounds=1).run("t")
    system = backend.requests[0].messages[0].content or ""
    assert "- developer" in system
    assert "- tester" in system


def test_answer_from_must_name_an_agent(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: t\nanswer: {from: nobody}\nagents:\n  - {id: developer, card: developer}\n"
    )
    with pytest.raises(Exception, match=r"answer.from .nobody. is not an agent id"):
        load_topology(path)


async def test_an_agent_sees_its_own_latest_work_next_round() -> None:
    backend = ScriptedBackend(
        by_tag={
            "manager": [goal("work"), go_on(), halt(final_answer="done")],
            "developer": [dev_step(), dev_step("```python\nv2\n```")],
            "tester": [qa_step("round one tests"), qa_step()],
        }
    )
    result = await swarm(backend, min_rounds=1).run("t")
    assert result.halt_reason == "manager"
    developer = [r for r in backend.requests if r.tag == "developer"]
    assert CODE not in (developer[0].messages[-1].content or "")
    assert "YOUR LATEST WORK" in (developer[1].messages[-1].content or "")
    assert CODE in (developer[1].messages[-1].content or "")


@tool
def run_tests(code: str) -> str:
    """Run tests.

    Args:
        code: the code.
    """
    return "[exit status 1]\nTraceback ...\nAssertionError: add(2, 3) == 6"


async def test_tool_results_reach_the_agents_report() -> None:
    call = ToolCall(id="c1", name="run_tests", arguments='{"code": "x"}')
    backend = ScriptedBackend(
        [Reply(tool_calls=[call]), "ran", step("tested", "Here are my results:", "q", "k")]
    )
    agent = LLMAgent("tester", card("tester"), backend, tools=[run_tests])
    output = await agent.step(StepContext(task="t", goal="g", round=1, memory=[]))
    assert output.private.startswith("Here are my results:")
    assert EVIDENCE in output.private
    assert "AssertionError: add(2, 3) == 6" in output.private
    assert "[exit status 1]" in output.private


def test_extract_code_joins_fenced_blocks_and_keeps_a_cut_one() -> None:
    text = "Plan.\n```python\nimport math\n```\nthen\n```python\ndef f():\n    return 1\n```\nok"
    assert extract(text, "code") == "```python\nimport math\n\ndef f():\n    return 1\n```"
    assert (
        extract("```python\ndef f():\n    return", "code") == "```python\ndef f():\n    return\n```"
    )
    assert extract("no fences here", "code") == "no fences here"
    assert extract("  keep all  ", "text") == "keep all"


def test_latest_work_skips_failed_and_empty_steps() -> None:
    out = AgentOutput(public="p", private="v1", query="q", key="k")
    empty = AgentOutput(public="p", private="  ", query="q", key="k")
    rounds = [
        (1, [AgentStep(agent="a", ok=True, output=out)]),
        (2, [AgentStep(agent="a", ok=False), AgentStep(agent="b", ok=True, output=empty)]),
    ]
    work = latest_work(rounds)
    assert list(work) == ["a"]
    assert (work["a"].round, work["a"].text) == (1, "v1")


def test_a_reply_without_code_does_not_replace_the_authors_code() -> None:
    code = AgentOutput(public="p", private="```python\nv1\n```", query="q", key="k")
    prose = AgentOutput(public="p", private="I added a helper function.", query="q", key="k")
    rounds = [
        (1, [AgentStep(agent="dev", ok=True, output=code)]),
        (2, [AgentStep(agent="dev", ok=True, output=prose)]),
    ]
    spec = AnswerSpec(source="dev", extract="code")
    assert latest_work(rounds, spec)["dev"].round == 1
    assert latest_work(rounds)["dev"].round == 2  # without the rule: the latest message


# --- the answer's check: the author's code with the tester's asserts, in the sandbox ---------

GOOD = "```python\ndef add(x, y):\n    return x + y\n```"
BAD = "```python\ndef add(x, y):\n    return x - y\n```"
TESTS = "```python\nassert add(2, 3) == 5\nassert add(0, 0) == 0\n```"


def checked_swarm(backend: ScriptedBackend, **options: object) -> Swarm:
    spec = AnswerSpec(source="developer", extract="code", tests_from="tester")
    return swarm(backend, spec, **options)


async def test_a_passing_check_ends_the_run_with_the_checked_code(tmp_path: Path) -> None:
    backend = ScriptedBackend(
        by_tag={
            "manager": [goal("work")],
            "developer": [dev_step(GOOD)],
            "tester": [qa_step(TESTS)],
        }
    )
    trace = tmp_path / "t.jsonl"
    result = await checked_swarm(backend, min_rounds=1).run("write add", trace_path=trace)
    backend.assert_complete()  # no decision was asked for: the check decided
    assert result.halt_reason == "checked"
    assert result.final_answer == GOOD
    check = result.rounds[0].check
    assert check is not None
    assert check.passed
    assert [e["passed"] for e in read_trace(trace) if e["event"] == "check"] == [True]


async def test_a_failed_check_goes_to_author_and_tester_and_the_fix_is_checked() -> None:
    backend = ScriptedBackend(
        by_tag={
            "manager": [goal("work"), go_on()],
            "developer": [dev_step(BAD), dev_step(GOOD)],
            "tester": [qa_step(TESTS), qa_step(TESTS)],
        }
    )
    result = await checked_swarm(backend, min_rounds=1, max_rounds=3).run("write add")
    backend.assert_complete()
    assert result.halt_reason == "checked"
    assert result.final_answer == GOOD
    first = result.rounds[0].check
    assert first is not None
    assert not first.passed
    assert "AssertionError" in first.output
    # The failure reached the developer's next prompt, and the manager's decision.
    developer = [r for r in backend.requests if r.tag == "developer"][1]
    assert "check of developer's round 1 code with tester's round 1 tests: FAILED" in (
        developer.messages[-1].content or ""
    )
    decision = [r for r in backend.requests if r.tag == "manager"][1]
    assert "FAILED" in (decision.messages[-1].content or "")


async def test_at_max_rounds_the_latest_passing_code_beats_a_later_broken_one() -> None:
    backend = ScriptedBackend(
        by_tag={
            "manager": [goal("work"), go_on(), go_on()],
            "developer": [dev_step(GOOD), dev_step(BAD)],
            # Late: handed in first, round 2's tests would pass round 1's code and settle it.
            "tester": [qa_step(TESTS), Reply(content=qa_step(TESTS), delay_s=0.2)],
        }
    )
    # min_rounds=2: the round-1 pass cannot end the run; round 2 breaks the code.
    result = await checked_swarm(backend, min_rounds=2, max_rounds=2).run("write add")
    backend.assert_complete()
    assert result.halt_reason == "max_rounds"
    assert result.final_answer == GOOD


def test_redefinitions_in_tests_are_dropped() -> None:
    from dytopo.swarm.check import test_code

    answer = "def add(x, y):\n    return x + y"
    tests = "```python\ndef add(x, y):\n    return 0\nassert add(1, 1) == 2\n```"
    kept = test_code(tests, answer)
    assert kept is not None
    assert "return 0" not in kept
    assert "assert add(1, 1) == 2" in kept
    assert test_code("```python\nprint(add(1, 2))\n```", answer) is None  # nothing asserted


def test_tests_from_needs_code_answers() -> None:
    with pytest.raises(ValueError, match="tests_from needs"):
        AnswerSpec(source="developer", tests_from="tester")


def test_unfenced_code_is_found_and_prose_around_it_dropped() -> None:
    text = "Here's the function:\n\ndef f(x):\n    return x + 1\n\nIt adds one."
    assert extract(text, "code") == "```python\ndef f(x):\n    return x + 1\n```"
    assert extract("Here's the complete function with the implementation:", "code") == (
        "Here's the complete function with the implementation:"
    )


def test_the_task_examples_check_the_code() -> None:
    from dytopo.swarm.check import example_tests

    task = (
        '```python\ndef inc(x):\n    """Add one.\n    >>> inc(1)\n    2\n'
        '    >>> inc(a)  # a is not defined anywhere\n    3\n    """\n```'
    )
    tests = example_tests(task, "def inc(x):\n    return x + 1")
    assert tests is not None
    assert "inc(1)" in tests
    assert "inc(a)" not in tests  # an example over undefined names would fail any code
    lines = 'def f(s):\n    """\n    f("ab") == "AB"\n    f("") ➞ ""\n    """'
    assert example_tests(lines, "def f(s):\n    return s.upper()").count("_got = ") == 2  # type: ignore[union-attr]
    assert example_tests("no examples here", "def f(s):\n    pass") is None


async def test_task_examples_end_the_run_when_they_pass() -> None:
    task = '```python\ndef add(x, y):\n    """Add.\n    >>> add(2, 3)\n    5\n    """\n```'
    script = {
        "manager": [goal("work"), go_on()],
        "developer": [dev_step(BAD), dev_step(GOOD)],
        "tester": [qa_step("t"), qa_step("t")],
    }
    backend = ScriptedBackend(by_tag=script)
    spec = AnswerSpec(source="developer", extract="code", tests_from="task")
    result = await swarm(backend, spec, min_rounds=1, max_rounds=3).run(task)
    backend.assert_complete()
    assert result.halt_reason == "checked"
    assert result.final_answer == GOOD
    first = result.rounds[0].check
    assert first is not None
    assert "add(2, 3) returned -1, expected 5" in first.output


async def test_code_that_does_not_parse_fails_its_check() -> None:
    from dytopo.agents.answer import Work
    from dytopo.swarm.check import run_check

    task = '```python\ndef add(x, y):\n    """Add.\n    >>> add(2, 3)\n    5\n    """\n```'
    broken = Work(agent="dev", round=1, text="```python\ndef add(x, y):\n    return (x +\n```")
    spec = AnswerSpec(source="dev", extract="code", tests_from="task")
    check = await run_check(spec, {"dev": broken}, 1, task)
    assert check is not None
    assert not check.passed
    assert "SyntaxError" in check.output


async def test_text_work_comes_whole_and_the_json_only_describes_it() -> None:
    code = 'def f(s):\n    """Say "hi"."""\n    return "hi"'
    backend = ScriptedBackend(
        [
            Reply(content=f"```python\n{code}\n```\nFirst version."),
            json.dumps({"public": "wrote f", "query": "tests of f", "key": "the code of f"}),
        ]
    )
    agent = LLMAgent("developer", card("developer"), backend, text_work=True)
    output = await agent.step(StepContext(task="t", goal="g", round=1, memory=[]))
    backend.assert_complete()
    assert output.private == f"```python\n{code}\n```\nFirst version."
    assert (output.public, output.query, output.key) == ("wrote f", "tests of f", "the code of f")
    work, described = backend.requests
    assert work.json_schema is None  # the work is free text: nothing to escape
    assert described.json_schema is not None
    assert set(described.json_schema["properties"]) == {"public", "query", "key"}
    # The JSON request continues the work's conversation, so the server reuses its prompt.
    assert [m.content for m in described.messages[: len(work.messages)]] == [
        m.content for m in work.messages
    ]
    assert described.messages[len(work.messages)].content == output.private


async def test_a_manager_halt_on_a_failed_check_is_not_accepted() -> None:
    task = '```python\ndef add(x, y):\n    """Add.\n    >>> add(2, 3)\n    5\n    """\n```'
    script = {
        "manager": [goal("work"), halt()],
        "developer": [dev_step(BAD), dev_step(GOOD)],
        "tester": [qa_step("t"), qa_step("t")],
    }
    backend = ScriptedBackend(by_tag=script)
    spec = AnswerSpec(source="developer", extract="code", tests_from="task")
    result = await swarm(backend, spec, min_rounds=1, max_rounds=3).run(task)
    backend.assert_complete()
    assert result.halt_reason == "checked"  # round 2's fix passed; round 1's halt was refused
    assert result.final_answer == GOOD
    assert result.rounds[0].halt_accepted is False


async def test_the_tasks_imports_are_in_scope_for_its_examples() -> None:
    from dytopo.agents.answer import Work
    from dytopo.swarm.check import run_check

    task = (
        "```python\nfrom typing import List\n\n\ndef total(xs: List[int]) -> int:\n"
        '    """Sum.\n    >>> total([1, 2])\n    3\n    """\n```'
    )
    answer = Work(
        agent="dev",
        round=1,
        text="```python\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```",
    )
    spec = AnswerSpec(source="dev", extract="code", tests_from="task")
    check = await run_check(spec, {"dev": answer}, 1, task)
    assert check is not None
    assert check.passed, check.output


async def test_a_long_fallback_answer_does_not_fail_the_run() -> None:
    long = "x" * 3500  # two of them pass the manager's 6,000-character answer cap
    backend = ScriptedBackend(
        by_tag={
            "manager": [goal("work"), go_on(), "not json", "still not json"],
            "developer": [dev_step(long)],
            "tester": [qa_step(long)],
        }
    )
    result = await swarm(backend, max_rounds=1).run("t")
    backend.assert_complete()
    assert result.halt_reason == "max_rounds"
    assert result.final_answer.count(long) == 2  # both agents' work, labelled


async def test_a_check_passing_mid_round_cancels_the_teammates_still_working() -> None:
    task = '```python\ndef add(x, y):\n    """Add.\n    >>> add(2, 3)\n    5\n    """\n```'
    script = {
        "manager": [goal("work")],
        # The passing work is handed in before its descriptors: none are asked for.
        "developer": [Reply(content=GOOD, delay_s=0.1)],
        "tester": [Reply(content=qa_step("t"), delay_s=30.0)],
    }
    backend = ScriptedBackend(by_tag=script)
    agents = [
        LLMAgent("developer", card("developer"), backend, reasks=1, text_work=True),
        LLMAgent("tester", card("tester"), backend, reasks=1),
    ]
    spec = AnswerSpec(source="developer", extract="code", tests_from="task")
    team = Swarm(
        agents,
        LLMManager(card("manager"), backend, reasks=1),
        HashEmbedder(),
        routing=RoutingConfig(mode="broadcast"),
        answer=spec,
        min_rounds=1,
        max_rounds=3,
    )
    result = await asyncio.wait_for(team.run(task), timeout=10)
    backend.assert_complete()
    # The author's request goes first: the teammates cannot take the slots it needs.
    assert [r.tag.split()[-1] for r in backend.requests[1:]] == ["developer", "tester"]
    assert result.halt_reason == "checked"
    assert result.final_answer == GOOD
    developer, tester = result.rounds[0].steps
    assert developer.ok
    assert not tester.ok
    assert not tester.error
    assert "developer's round 1 code passed" in tester.skipped
    assert result.failures == 0  # a skipped step is not a failure
    assert result.rounds[0].check is not None
    assert result.rounds[0].check.passed


async def test_a_failing_check_mid_round_lets_the_round_finish() -> None:
    task = '```python\ndef add(x, y):\n    """Add.\n    >>> add(2, 3)\n    5\n    """\n```'
    script = {
        "manager": [goal("work"), halt()],
        "developer": [dev_step(BAD)],
        "tester": [Reply(content=qa_step("t"), delay_s=0.2)],
    }
    backend = ScriptedBackend(by_tag=script)
    spec = AnswerSpec(source="developer", extract="code", tests_from="task")
    result = await swarm(backend, spec, min_rounds=1, max_rounds=1).run(task)
    tester = result.rounds[0].steps[1]
    assert tester.ok
    assert not tester.skipped
    check = result.rounds[0].check
    assert check is not None
    assert not check.passed


async def test_the_author_starts_first_and_a_pass_spares_the_teammates_request() -> None:
    from dytopo.agents.base import FunctionAgent

    task = '```python\ndef add(x, y):\n    """Add.\n    >>> add(2, 3)\n    5\n    """\n```'

    async def slow_author(ctx: StepContext) -> AgentOutput:
        await asyncio.sleep(0.2)  # e.g. packing a long memory before its first request
        return AgentOutput(public="wrote add", private=GOOD, query="tests", key="code")

    backend = ScriptedBackend(
        by_tag={"manager": [goal("work")], "tester": [Reply(content=qa_step("t"))]}
    )
    team = Swarm(
        [FunctionAgent("developer", slow_author), LLMAgent("tester", card("tester"), backend)],
        LLMManager(card("manager"), backend, reasks=1),
        HashEmbedder(),
        answer=AnswerSpec(source="developer", extract="code", tests_from="task"),
        min_rounds=1,
    )
    result = await team.run(task)
    assert result.halt_reason == "checked"
    assert [r.tag for r in backend.requests] == ["manager"]  # no tester request at all
    assert result.rounds[0].steps[1].skipped


def test_prose_that_mentions_a_fence_does_not_open_one() -> None:
    from dytopo.agents.answer import code_blocks
    from dytopo.swarm.check import task_imports

    task = (
        "Return the function in one ```python block.\n\n```python\n"
        "from typing import List\n\n\ndef f(xs: List[int]) -> int:\n    pass\n```"
    )
    assert task_imports(task) == ["from typing import List"]
    assert code_blocks(task)[0].startswith("from typing import List")
    # A reply that opens its fence mid-sentence still has its code found.
    assert code_blocks("Here: ```python\ndef f():\n    return 1\n``` done") == [
        "def f():\n    return 1"
    ]


async def test_the_tasks_imports_reach_a_check_of_code_written_without_them() -> None:
    from dytopo.agents.answer import Work
    from dytopo.swarm.check import run_check

    task = (
        "Return the function in one ```python block.\n\n```python\nfrom typing import List\n\n"
        'def total(xs: List[int]) -> int:\n    """\n    >>> total([1, 2])\n    3\n    """\n```'
    )
    code = "```python\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```"
    spec = AnswerSpec(source="dev", extract="code", tests_from="task")
    check = await run_check(spec, {"dev": Work(agent="dev", round=1, text=code)}, 1, task)
    assert check is not None
    assert check.passed, check.output


async def test_a_teammates_passing_code_is_the_answer_when_the_authors_fails() -> None:
    task = '```python\ndef add(x, y):\n    """Add.\n    >>> add(2, 3)\n    5\n    """\n```'
    script = {
        "manager": [goal("work")],
        "developer": [dev_step(BAD)],
        "tester": [Reply(content=qa_step(GOOD), delay_s=0.1)],  # the tester's copy is right
    }
    backend = ScriptedBackend(by_tag=script)
    spec = AnswerSpec(source="developer", extract="code", tests_from="task")
    result = await swarm(backend, spec, min_rounds=1, max_rounds=2).run(task)
    backend.assert_complete()
    assert result.halt_reason == "checked"
    assert result.final_answer == GOOD
    check = result.rounds[0].check
    assert check is not None
    assert check.source == "tester"


async def test_a_failed_check_is_shown_with_the_work_it_judged() -> None:
    task = '```python\ndef add(x, y):\n    """Add.\n    >>> add(2, 3)\n    5\n    """\n```'
    script = {
        "manager": [goal("work"), go_on()],
        "developer": [dev_step(BAD), dev_step(GOOD)],
        "tester": [qa_step("t"), Reply(content=qa_step("t"), delay_s=0.2)],
    }
    backend = ScriptedBackend(by_tag=script)
    spec = AnswerSpec(source="developer", extract="code", tests_from="task")
    result = await swarm(backend, spec, min_rounds=1, max_rounds=2).run(task)
    assert result.halt_reason == "checked"
    second = [r for r in backend.requests if r.tag == "developer"][1]
    prompt = second.messages[-1].content or ""
    work = prompt.index("YOUR LATEST WORK")
    failed = prompt.index("IT FAILED ITS CHECK")
    assert work < failed < prompt.index("ROUND 2 GOAL")
    assert "add(2, 3) returned -1, expected 5" in prompt[failed:]
    assert prompt.count("returned -1, expected 5") == 1  # not in memory as well
