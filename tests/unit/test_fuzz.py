"""Fuzzing in CI: a few examples of each target in fuzzing.py (benchmarks/fuzz.py runs thousands).

Topology files through `dytopo validate`, model replies through both ladders, arbitrary
arguments through the built-in tools. Each property is stated in fuzzing.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from fuzzing import (
    FUZZ_TOOLS,
    GOOD_STEP,
    RUN_PYTHON_CASES,
    SEEDS,
    LadderCase,
    builtin_calls,
    builtin_registry,
    check_agent_step,
    check_builtin_call,
    check_requests,
    check_sendable,
    check_structured,
    check_tool_phase,
    check_validate,
    check_validate_lines,
    known_bug,
    ladder_cases,
    make_workspace,
    mutated_topology,
    tool_context,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dytopo.agents.base import AgentOutput
from dytopo.agents.prompting import Packer
from dytopo.agents.structured import ask_structured
from dytopo.agents.tool_loop import ToolPolicy, run_tools
from dytopo.backends.types import ChatMessage, ChatRequest, Sampling, ToolCall
from dytopo.errors import ToolError
from dytopo.testing import Reply, ScriptedBackend
from dytopo.tools import ToolContext, ToolRegistry
from dytopo.tools.executor import MAX_ARGUMENT_DEPTH, ToolExecutor, parse_arguments

FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def registry() -> ToolRegistry:
    return builtin_registry()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("fuzz"))


# --- topology files --------------------------------------------------------------------------


def test_the_shipped_topologies_validate(tmp_path: Path) -> None:
    for name, content in SEEDS.items():
        path = tmp_path / name
        path.write_bytes(content)
        assert check_validate(path) == 0


@FUZZ
@given(content=mutated_topology())
def test_a_mutated_topology_is_ok_or_one_line_per_problem(
    content: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("topo") / "t.yaml"
    path.write_bytes(content)
    check_validate(path)


def test_mutated_topologies_through_the_real_command(tmp_path: Path) -> None:
    """One `dytopo validate` process over a batch of mutated files, as a user runs it."""
    files = []
    for k, content in enumerate(_sample(mutated_topology(), 25)):
        path = tmp_path / f"m{k}.yaml"
        path.write_bytes(content)
        files.append(path)
    done = subprocess.run(
        [sys.executable, "-m", "dytopo", "validate", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    check_validate_lines(files, done.returncode, done.stdout + done.stderr)
    assert done.returncode == 2  # at least one of 25 mutated files is broken


def _sample(strategy: st.SearchStrategy[bytes], n: int) -> list[bytes]:
    """Draw n values, the same ones on every run (derandomized)."""
    found: list[bytes] = []

    @settings(max_examples=n, database=None, deadline=None, derandomize=True)
    @given(strategy)
    def collect(value: bytes) -> None:
        found.append(value)

    collect()
    return found


# --- model replies ---------------------------------------------------------------------------


def run(check: Coroutine[Any, Any, object]) -> None:
    """Run one example. A failure that shows a known bug (fuzzing.KNOWN_BUGS, each proved by its
    own strict xfail test below) does not fail the property test: it would only make it flaky."""
    try:
        asyncio.run(check)
    except Exception as exc:
        if known_bug(exc) is None:
            raise


@FUZZ
@given(case=ladder_cases())
def test_the_structured_ladder_never_raises_and_always_fits(case: LadderCase) -> None:
    run(check_structured(case))


@FUZZ
@given(case=ladder_cases())
def test_the_tool_ladder_never_raises_and_always_fits(case: LadderCase) -> None:
    run(check_tool_phase(case))


@FUZZ
@given(case=ladder_cases(), with_tools=st.booleans())
def test_an_agent_step_is_an_output_or_agent_failed(case: LadderCase, with_tools: bool) -> None:
    run(check_agent_step(case, with_tools))


@pytest.mark.parametrize(
    "arguments",
    ["[" * 100_000, '{"text": ' + "[" * 100_000, '{"a":' * 5_000 + "1" + "}" * 5_000],
    ids=["open_lists", "open_value", "closed_objects"],
)
def test_deeply_nested_tool_arguments_are_refused_not_a_recursion_error(arguments: str) -> None:
    with pytest.raises(ToolError, match=f"nested more than {MAX_ARGUMENT_DEPTH} levels deep"):
        parse_arguments(ToolCall(name="echo", arguments=arguments))


def test_arguments_nested_to_the_limit_still_parse() -> None:
    value: object = 1
    for _ in range(MAX_ARGUMENT_DEPTH - 1):
        value = [value]
    assert parse_arguments(ToolCall(name="x", arguments=json.dumps({"a": value})))


@pytest.mark.parametrize("arguments", ['{"text": "a\\ud800"}', '{"\\udfff": "x"}'])
async def test_a_lone_surrogate_escape_in_tool_arguments_is_refused(arguments: str) -> None:
    """Found by fuzzing: JSON decoding turned the escape into a lone surrogate, which the echo
    tool returned; no UTF-8 request, file or trace can hold it. A valid pair still decodes."""
    executor = ToolExecutor(FUZZ_TOOLS, ToolContext())
    outcome = await executor.run(ToolCall(name="echo", arguments=arguments))
    assert not outcome.ok
    assert "lone UTF-16 surrogate" in outcome.error
    outcome.result.encode("utf-8")
    pair = await executor.run(ToolCall(name="echo", arguments='{"text": "\\ud83d\\ude00"}'))
    assert pair.result == "\U0001f600"


async def test_a_model_looping_on_brackets_is_re_asked_not_crashed() -> None:
    """The tool ladder with a reply of 100,000 open brackets as arguments (a real failure mode
    of small models) records a refusal and re-asks."""
    looping = Reply(tool_calls=[ToolCall(id="1", name="echo", arguments="[" * 100_000)])
    good = Reply(tool_calls=[ToolCall(id="2", name="echo", arguments='{"text": "hi"}')])
    backend = ScriptedBackend([looping, good, "done"])
    phase = await run_tools(
        backend,
        [ChatMessage(role="user", content="go")],
        ToolExecutor(FUZZ_TOOLS, ToolContext()),
        ToolPolicy(),
        Sampling(),
    )
    assert [a.ok for a in phase.attempts] == [False, True, True]
    assert "nested more than" in phase.attempts[0].error
    assert [o.result for o in phase.outcomes] == ["hi"]
    await check_requests(backend, backend.n_ctx_per_slot)
    backend.assert_complete()


async def test_a_tool_error_of_several_lines_becomes_one_line() -> None:
    executor = ToolExecutor(FUZZ_TOOLS, ToolContext())
    outcome = await executor.run(ToolCall(name="fails", arguments='{"reason": "a\\nb"}'))
    assert not outcome.ok
    assert outcome.error == "RuntimeError: failed on purpose: a b"
    assert outcome.result == "error: RuntimeError: failed on purpose: a b"


async def test_a_reply_with_a_lone_surrogate_is_re_asked_with_a_request_that_can_be_sent() -> None:
    backend = ScriptedBackend(["\ud800 not json", GOOD_STEP])
    request = ChatRequest(messages=[ChatMessage(role="user", content="go")], max_tokens=200)
    result = await ask_structured(backend, request, AgentOutput, reasks=1)
    assert result.value is not None
    check_sendable(backend)


async def test_a_reask_that_cannot_fit_ends_as_a_recorded_failure() -> None:
    backend = ScriptedBackend(["not json"], n_ctx_per_slot=190)
    pack = Packer(
        backend,
        lambda task, kept: [ChatMessage(role="user", content=f"TASK: {task} " + "w " * 90)],
        "t",
        [],
        budget=190,
        max_output_tokens=86,
        who="fuzz",
    )
    request = ChatRequest(messages=await pack(), max_tokens=86)
    result = await ask_structured(backend, request, AgentOutput, reasks=1, pack=pack)
    assert result.value is None
    assert "no room left to re-ask" in result.error
    assert len(backend.requests) == 1
    await check_requests(backend, 190)


async def test_a_ladder_error_is_one_line_whatever_the_reply_keys() -> None:
    backend = ScriptedBackend(['{"a\\nb": 1}'])
    request = ChatRequest(messages=[ChatMessage(role="user", content="go")], max_tokens=100)
    result = await ask_structured(backend, request, AgentOutput, reasks=0)
    assert result.value is None
    assert "\n" not in result.error, result.error


# --- tool arguments --------------------------------------------------------------------------


@FUZZ
@given(drawn=builtin_calls())
def test_builtin_tools_answer_or_refuse_in_one_line_within_limits(
    drawn: tuple[str, str, object], registry: ToolRegistry, workspace: Path
) -> None:
    name, arguments, web = drawn
    asyncio.run(check_builtin_call(registry, workspace, name, arguments, web))  # type: ignore[arg-type]


@pytest.mark.parametrize("code", RUN_PYTHON_CASES, ids=range(len(RUN_PYTHON_CASES)))
async def test_run_python_stays_within_its_limits(
    code: str, registry: ToolRegistry, workspace: Path
) -> None:
    ctx = tool_context(workspace).model_copy(update={"timeout_s": 3})
    executor = ToolExecutor([registry.get("run_python")], ctx)
    outcome = await executor.run(ToolCall(name="run_python", arguments=json.dumps({"code": code})))
    assert len(outcome.result) <= ctx.max_result_chars + 60
    outcome.result.encode("utf-8")
    assert "\n" not in outcome.error
    assert "root:" not in outcome.result  # /etc is not in the sandbox


# --- what the fuzzing found in the built-in tools ----------------------------------------------


async def test_a_file_name_that_is_not_utf8_is_listed_as_text(
    registry: ToolRegistry, workspace: Path
) -> None:
    listing = await registry.get("list_files")({"path": "."}, tool_context(workspace))
    assert "caf\\xe9.md" in listing.splitlines()
    listing.encode("utf-8")  # the listing can go into a request to the server


async def test_search_docs_names_a_file_that_is_not_utf8_as_text(
    registry: ToolRegistry, workspace: Path
) -> None:
    ctx = tool_context(workspace).model_copy(update={"docs_dir": workspace})
    found = await registry.get("search_docs")({"query": "file name caches", "k": 10}, ctx)
    assert "caf\\xe9.md (score" in found
    found.encode("utf-8")


@pytest.mark.parametrize("name", ["read_file", "list_files"])
async def test_a_path_with_a_lone_surrogate_is_a_tool_error(
    name: str, registry: ToolRegistry, workspace: Path
) -> None:
    with pytest.raises(ToolError, match="not valid Unicode at position 2"):
        await registry.get(name)({"path": "ab\ud800"}, tool_context(workspace))


async def test_a_path_longer_than_the_file_system_allows_is_a_tool_error(
    registry: ToolRegistry, workspace: Path
) -> None:
    with pytest.raises(ToolError, match=r"cannot list 'aaaa.*File name too long"):
        await registry.get("list_files")({"path": "a" * 5000}, tool_context(workspace))


async def test_search_docs_does_not_echo_a_huge_query(
    registry: ToolRegistry, workspace: Path
) -> None:
    found = await registry.get("search_docs")({"query": "zq" * 500_000}, tool_context(workspace))
    assert found.startswith("no passage matches 'zqzq")
    assert len(found) < 200
