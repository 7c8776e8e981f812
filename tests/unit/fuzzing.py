"""Fuzz targets shared by tests/unit/test_fuzz.py (a few examples in CI) and benchmarks/fuzz.py
(thousands, on demand).

Each target is a hypothesis strategy plus a check that raises AssertionError on a property
violation; anything else escaping a check is a bug too. The properties (issue 9 section 4):

- topology files: `dytopo validate` exits 0, or 2 with every line `FILE:LINE: field: fix`;
- model replies: the structured and tool-call ladders return a value or a recorded failure and
  never raise, and every request they send fits the context budget and can be sent;
- tool arguments: built-in tools answer or refuse with a one-line ToolError, within their limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import re
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from hypothesis import strategies as st
from malformed import VALID_STEP
from typer.testing import CliRunner

from dytopo.agents.base import AgentOutput, StepContext
from dytopo.agents.cards import RoleCard
from dytopo.agents.llm import LLMAgent
from dytopo.agents.memory import MemoryItem
from dytopo.agents.prompting import Packer
from dytopo.agents.structured import Structured, ask_structured
from dytopo.agents.tool_loop import ToolPhase, ToolPolicy, run_tools
from dytopo.backends.types import ChatMessage, ChatRequest, Sampling, ToolCall
from dytopo.cli import app
from dytopo.errors import AgentFailed, BudgetExceeded, MalformedReply, ToolError
from dytopo.testing import Reply, ScriptedBackend, ScriptItem
from dytopo.tools import ToolContext, ToolRegistry, tool
from dytopo.tools.executor import ToolExecutor, ToolOutcome

ROOT = Path(__file__).resolve().parents[2]
SEEDS = {p.name: p.read_bytes() for p in sorted((ROOT / "topologies").glob("*.yaml"))}
MAX_LINES = 21  # 20 problems and a count
TRUNCATION_NOTE = len("\n[truncated:  more characters]") + 20

# Text of every kind: lone surrogates, controls, NUL, combining marks, emoji, right-to-left.
JUNK_CHARS = st.characters(categories=["Cs", "Cc", "Cf", "Co", "Mn", "So", "Lo", "Zs", "Ll", "Nd"])
junk = st.text(JUNK_CHARS, max_size=40)
huge = st.sampled_from([1_000, 10_000, 100_000, 1_000_000]).map(lambda n: "x" * n)
deep = st.builds(
    lambda n, kind: {"list": "[" * n + "]" * n, "open": "[" * n, "obj": '{"a":' * n}[kind],
    st.sampled_from([33, 500, 5_000, 100_000]),
    st.sampled_from(["list", "open", "obj"]),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | junk,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(junk, inner, max_size=4),
    max_leaves=12,
)


def dumped(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


# --- topology files --------------------------------------------------------------------------

YAML_JUNK = st.sampled_from(
    [
        "seed: " + "9" * 5000,
        "seed: -1",
        "seed: 1e400",
        "max_rounds: .inf",
        "routing: {tau: .nan}",
        "routing: {tau: -.inf, mode: nope}",
        "agents: []",
        "agents: {id: a}",
        "agents: [[[[[[",
        "name: &a x\nother: *a",
        "a: &a [1, 2]\nb: [*a, *a, *a]",
        "name: !!python/object/apply:os.system ['true']",
        "tool_modules: !!set {a: null}",
        "task: !custom x",
        "? [a, b]\n: c",
        "---\nname: y",
        "...",
        "%YAML 1.1",
        "tool_modules: ['/tmp/evil.py', this, '../../x.py', 'a\\0b']",
        "tool_settings: {workspace: /, http_allow: ['*'], max_bytes: -1}",
        "backend: {base_url: 'http://[::1'}",
        "embedder: {base_url: 'file:///etc/passwd'}",
        "manager: {card: ../../../../etc/passwd}",
        "  - id: x\n    card: /etc/passwd\n    tools: [run_python, nope]",
        "  - {id: '', card: ''}",
        "'\\x1b[31m': 1",
        '"\\e]0;pwned\\a": 1',
        "k: " + "{k: " * 40,
        "k:\n" + "".join(" " * i + "k:\n" for i in range(1, 40)),
        "name: " + "\U0001f600" * 100,
        "task: '" + "\u202e" * 20 + "'",
        "budget: {weight: 1e308}",
        "date: 2024-02-30",
        "when: 2024-01-01T00:00:00Z",
        "\t- tab",
        "\ufeffname: bom",
    ]
)
SCALAR_TEXTS = [
    ".inf", "-.inf", ".nan", ".NaN", "~", "null", "yes", "no", "on", "0x1F", "0o17", "1_000",
    "1e400", "-0", "''", '""', "[]", "{}", "&a", "*a", "!!str", "!!binary", "!!float", "!x", "|",
    ">", "@", "`", "%", "'unclosed", '"\\ud800"', '"\\x00"', "9" * 400, "[" * 50, "{" * 50,
    "[" * 20_000, "{a: " * 3_000, "[1, {a: [2, {b: [3]}]}]", "{id: x, card: y}",
]  # fmt: skip
YAML_SCALARS = st.one_of(
    st.sampled_from(SCALAR_TEXTS), st.integers().map(str), st.floats().map(repr), junk
)
YAML_KEYS = st.sampled_from([
    "name", "agents", "id", "card", "tools", "seed", "routing", "tau", "mode", "budget", "weight",
    "context", "tool_modules", "tool_settings", "workspace", "http_allow", "manager", "backend",
    "base_url", "max_rounds", "<<",
])  # fmt: skip
YAML_LINES = st.one_of(
    YAML_JUNK,
    junk,
    st.builds(
        lambda indent, key, value: f"{' ' * indent}{key}: {value}",
        st.integers(0, 8),
        YAML_KEYS | junk,
        YAML_SCALARS,
    ),
)


@st.composite
def mutated_topology(draw: st.DrawFn) -> bytes:
    """A shipped topology after a few byte flips, line edits, or junk lines and values."""
    data = bytearray(draw(st.sampled_from(sorted(SEEDS.values()))))
    for _ in range(draw(st.integers(1, 4))):
        lines = bytes(data).split(b"\n")
        where = draw(st.integers(0, len(lines) - 1))
        kind = draw(
            st.sampled_from(
                ["flip", "delete", "duplicate", "swap", "insert", "value", "indent", "cut"]
            )
        )
        if kind == "flip" and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
            continue
        if kind == "cut":
            data = data[: draw(st.integers(0, len(data)))]
            continue
        if kind == "delete":
            del lines[where]
        elif kind == "duplicate":
            lines.insert(where, lines[where])
        elif kind == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[where], lines[other] = lines[other], lines[where]
        elif kind == "insert":
            lines.insert(where, draw(YAML_LINES).encode("utf-8", "surrogatepass"))
        elif kind == "value" and b":" in lines[where]:
            key = lines[where].split(b":", 1)[0]
            value = draw(YAML_SCALARS).encode("utf-8", "surrogatepass")
            lines[where] = key + b": " + value
        elif kind == "indent":
            lines[where] = b" " * draw(st.integers(0, 9)) + lines[where].lstrip()
        data = bytearray(b"\n".join(lines))
    return bytes(data)


def check_validate_lines(paths: Sequence[Path], code: int, output: str) -> None:
    """`dytopo validate` output: OK per file (exit 0) or problem lines (exit 2), nothing else."""
    assert "Traceback" not in output, output
    assert code in (0, 2), f"exit code {code}: {output[:2000]}"
    lines = output.splitlines()
    for path in paths:
        own = [x for x in lines if x.startswith(f"{path}:")]
        assert own, f"nothing printed for {path}: {output[:2000]}"
        assert len(own) <= MAX_LINES, f"{len(own)} lines for {path}"
        if own == [f"{path}: OK"]:
            continue
        problem = re.compile(rf"{re.escape(str(path))}:\d+: \S.*?: \S.*")
        count = re.compile(rf"{re.escape(str(path))}: \.\.\. and \d+ more problems .*")
        for k, line in enumerate(own):
            fits = problem.fullmatch(line) or (k == MAX_LINES - 1 and count.fullmatch(line))
            assert fits, f"not FILE:LINE: field: fix: {line!r}"
    assert len(lines) == sum(1 for x in lines for p in paths if x.startswith(f"{p}:")), output
    assert (code == 0) == all(f"{p}: OK" in lines for p in paths), output


_runner = CliRunner()


def check_validate(path: Path) -> int:
    """Run `dytopo validate PATH` in-process through the CLI app; return the exit code."""
    result = _runner.invoke(app, ["validate", str(path)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"validate raised {result.exception!r}") from result.exception
    check_validate_lines([path], result.exit_code, result.output)
    return result.exit_code


# --- model replies ---------------------------------------------------------------------------

GOOD_STEP = json.dumps(VALID_STEP)
FINISH = st.sampled_from(["stop", "stop", "length", "tool_calls", "", "eos", "content_filter"])


def _wrong_field(value: Any, name: str) -> str:
    return dumped({**VALID_STEP, name: value})


step_text = st.one_of(
    st.just(GOOD_STEP),
    st.integers(0, len(GOOD_STEP)).map(lambda n: GOOD_STEP[:n]),
    st.builds(_wrong_field, json_values | huge, st.sampled_from(sorted(VALID_STEP))),
    json_values.map(dumped),
    st.text(JUNK_CHARS, max_size=200),
    huge,
    deep,
    st.builds(lambda a, b: a + GOOD_STEP + b, junk, junk),
    st.sampled_from(
        ["", "null", "{}", "[]", '"x"', "```json\n{}\n```", '{"public": "\\ud800"}', "NaN"]
    ),
)
tool_names = st.sampled_from(["echo", "nested", "fails"]) | junk | huge
tool_arguments = st.one_of(
    st.just('{"text": "hi"}'),
    st.builds(lambda t, n: dumped({"text": t, "times": n}), junk | huge, json_values),
    st.builds(lambda v: dumped({"data": v}), json_values),
    json_values.map(dumped),
    st.text(JUNK_CHARS, max_size=80),
    deep,
    deep.map(lambda d: '{"data": ' + d),
    huge,
)
valid_tool_calls = st.one_of(
    st.builds(
        lambda text, times: ToolCall(name="echo", arguments=dumped({"text": text, "times": times})),
        junk,
        st.integers(-5, 2000),
    ),
    st.builds(lambda v: ToolCall(name="nested", arguments=dumped({"data": v})), json_values),
    st.builds(lambda r: ToolCall(name="fails", arguments=dumped({"reason": r})), junk),
)
tool_calls = st.lists(
    valid_tool_calls | st.builds(ToolCall, id=junk, name=tool_names, arguments=tool_arguments),
    max_size=6,
)
replies = st.lists(
    st.one_of(
        st.builds(Reply, content=step_text, finish_reason=FINISH),
        st.builds(Reply, content=step_text | st.just(""), tool_calls=tool_calls),
        st.builds(
            lambda body: MalformedReply("output does not parse", url="fuzz://", body=body),
            junk,
        ),
        step_text,
    ),
    min_size=1,
    max_size=8,
)


@tool
def echo(text: str, times: int = 1) -> str:
    """Repeat a text.

    Args:
        text: what to repeat.
        times: how often (at most 1000).
    """
    return " ".join([text] * max(0, min(times, 1000)))


@tool
def nested(data: Any) -> str:
    """Describe any JSON value.

    Args:
        data: anything.
    """
    return json.dumps(data)[:50_000]


@tool
def fails(reason: str = "") -> str:
    """Always fail.

    Args:
        reason: why.
    """
    raise RuntimeError(f"failed\non purpose: {reason}")


FUZZ_TOOLS = [echo, nested, fails]


class Cycle:
    """A responder that plays the drawn replies round and round (the ladder asks any number)."""

    def __init__(self, items: Sequence[ScriptItem]) -> None:
        self.items = list(items)
        self.calls = 0

    def __call__(self, request: ChatRequest) -> ScriptItem:
        item = self.items[self.calls % len(self.items)]
        self.calls += 1
        return item


def sendable(request: ChatRequest) -> None:
    """The request as a client would put it on the wire: UTF-8 JSON."""
    body = {"messages": [m.to_openai() for m in request.messages], "tools": request.tools}
    json.dumps(body, ensure_ascii=False).encode("utf-8")


async def check_requests(backend: ScriptedBackend, budget: int) -> None:
    """Every request was expected, fits `budget`, and can be encoded to be sent."""
    assert not backend.unexpected, backend.unexpected
    assert not backend.overflows, backend.overflows
    for number, request in enumerate(backend.requests, 1):
        prompt = await backend.count_tokens(request.messages, request.tools)
        assert prompt + request.max_tokens <= budget, f"request {number}: {prompt} tokens"
        sendable(request)


def memory(n: int) -> list[MemoryItem]:
    return [
        MemoryItem(round=1 + r // 3, kind="own", source="a", text=f"note {r} " + "word " * 60)
        for r in range(n)
    ]


def _build(task: str, kept: Sequence[str]) -> list[ChatMessage]:
    return [
        ChatMessage(role="system", content="You are a fuzz target. Reply with JSON."),
        ChatMessage(role="user", content=f"TASK: {task}\n" + "\n".join(kept)),
    ]


@dataclass
class LadderCase:
    """One drawn scenario for the ladders."""

    replies: list[ScriptItem]
    budget: int
    max_tokens: int
    reasks: int
    notes: int
    policy: ToolPolicy = field(default_factory=ToolPolicy)


@st.composite
def ladder_cases(draw: st.DrawFn, tight: bool = True) -> LadderCase:
    """Replies and a budget: roomy, or (`tight`) sometimes with the output taking most of it."""
    budget = draw(
        st.integers(900, 4096) | st.integers(120, 900) if tight else st.integers(900, 4096)
    )
    share = draw(st.sampled_from([0.05, 0.1, 0.2, 0.4]) | st.floats(0.0, 0.97 if tight else 0.4))
    policy = ToolPolicy(
        choice=draw(st.sampled_from(["auto", "required"])),
        max_rounds=draw(st.integers(1, 3)),
        max_calls=draw(st.integers(1, 5)),
        reasks=draw(st.integers(0, 2)),
        max_tokens=draw(st.integers(16, 256)),
        max_parallel=draw(st.integers(1, 4)),
        prefill=draw(st.sampled_from([None, "<tool_call>\n"])),
    )
    return LadderCase(
        replies=draw(replies),
        budget=budget,
        max_tokens=max(1, int(budget * share)),
        reasks=draw(st.integers(0, 3)),
        notes=draw(st.integers(0, 40)),
        policy=policy,
    )


def _one_line(text: str, what: str) -> None:
    assert "\n" not in text, f"{what} is not one line: {text[:300]!r}"


async def check_structured(case: LadderCase) -> Structured[AgentOutput] | None:
    """ask_structured with a packer: a value or a recorded failure; every request fits.

    None when the budget cannot hold the first prompt (nothing to ask)."""
    backend = ScriptedBackend(responder=Cycle(case.replies), n_ctx_per_slot=case.budget)
    pack = Packer(
        backend,
        _build,
        "fuzz the ladder",
        [m.render() for m in memory(case.notes)],
        budget=case.budget,
        max_output_tokens=case.max_tokens,
        who="fuzz",
    )
    try:
        first = await pack()
    except BudgetExceeded:
        return None  # the budget cannot hold even the first prompt: a configuration error
    request = ChatRequest(messages=first, max_tokens=case.max_tokens)
    result = await ask_structured(backend, request, AgentOutput, reasks=case.reasks, pack=pack)
    assert result.attempts, "no attempt recorded"
    assert len(result.attempts) <= case.reasks + 1
    assert len(backend.requests) == len(result.attempts)
    if result.value is None:
        # Every rung was used, or the next re-ask could not fit next to the pinned prompt.
        no_room = "no room left to re-ask" in result.error
        assert len(result.attempts) == case.reasks + 1 or no_room, result.error
        assert result.error
        _one_line(result.error, "ladder error")
        assert not any(a.ok for a in result.attempts)
    else:
        assert [a.ok for a in result.attempts] == [False] * (len(result.attempts) - 1) + [True]
    for attempt in result.attempts:
        assert len(attempt.reply) <= 300
    await check_requests(backend, case.budget)
    return result


def _check_outcome(outcome: ToolOutcome, limit: int) -> None:
    assert len(outcome.result) <= limit + TRUNCATION_NOTE, len(outcome.result)
    _one_line(outcome.error, "tool error")
    outcome.result.encode("utf-8")


async def check_tool_phase(case: LadderCase) -> ToolPhase | None:
    """run_tools with a packer: executed or refused calls, or a recorded failure; never raises.

    None when the budget cannot hold the first request."""
    backend = ScriptedBackend(responder=Cycle(case.replies), n_ctx_per_slot=case.budget)
    definitions = [t.definition() for t in FUZZ_TOOLS]
    pack = Packer(
        backend,
        _build,
        "fuzz the tool ladder",
        [m.render() for m in memory(case.notes)],
        budget=case.budget,
        max_output_tokens=case.policy.max_tokens,
        who="fuzz",
        tools=definitions,
        reserve=case.budget // 4,
    )
    limit = 400
    executor = ToolExecutor(FUZZ_TOOLS, ToolContext(max_result_chars=limit, timeout_s=5))
    events: list[tuple[str, dict[str, Any]]] = []
    try:
        first = await pack()
    except BudgetExceeded:
        return None  # no room for the first request: a configuration error
    phase = await run_tools(
        backend,
        first,
        executor,
        case.policy,
        Sampling(),
        emit=lambda name, **fields: events.append((name, fields)),
        pack=pack,
    )
    policy = case.policy
    assert len(phase.attempts) <= policy.max_rounds * (policy.reasks + 1)
    assert len(backend.requests) == len(phase.attempts)
    assert all(a.kind == "tool_call" for a in phase.attempts)
    ran = [o for o in phase.outcomes if o.ok or o.repeated or o.wall_s > 0]
    assert len(ran) <= policy.max_calls
    for outcome in phase.outcomes:
        _check_outcome(outcome, limit)
    for _, fields in events:
        json.dumps(fields, default=str)  # the trace can write every event
    await check_requests(backend, case.budget)
    return phase


async def check_agent_step(case: LadderCase, with_tools: bool) -> AgentOutput | None:
    """LLMAgent.step, both ladders behind its packers: an output, or AgentFailed (the ladder's
    recorded failure, with every attempt in ctx.attempts), or BudgetExceeded before the
    structured ladder asked anything (the budget cannot hold the prompt)."""
    backend = ScriptedBackend(responder=Cycle(case.replies), n_ctx_per_slot=case.budget)
    agent = LLMAgent(
        "fuzzer",
        RoleCard(name="fuzzer", prompt="You fuzz."),
        backend,
        max_output_tokens=case.max_tokens,
        reasks=case.reasks,
        tools=FUZZ_TOOLS if with_tools else (),
        tool_context=ToolContext(timeout_s=5),
        tool_policy=case.policy,
    )
    ctx = StepContext(task="fuzz the agent", goal="goal", round=9, memory=memory(case.notes))
    output: AgentOutput | None
    try:
        output = await agent.step(ctx)
    except AgentFailed as exc:
        _one_line(str(exc), "AgentFailed")
        assert ctx.attempts
        assert not ctx.attempts[-1].ok
        output = None
    except BudgetExceeded:
        # Packing a first prompt that can never fit is a configuration error (`dytopo plan`
        # names it); once the structured ladder has asked, a re-ask must fit or be recorded.
        if any(not r.tools for r in backend.requests):
            raise
        output = None
    await check_requests(backend, case.budget)
    return output


def check_sendable(backend: ScriptedBackend) -> None:
    for request in backend.requests:
        sendable(request)


KNOWN_BUGS: dict[str, Callable[[BaseException], bool]] = {
    # name -> whether a failure shows it. Each entry comes with a strict xfail test in
    # test_fuzz.py; delete the entry when its fix lands (the xfail test then fails).
}


def known_bug(exc: BaseException) -> str | None:
    """The name of the known bug `exc` shows, if any."""
    return next((name for name, shows in KNOWN_BUGS.items() if shows(exc)), None)


# --- tool arguments --------------------------------------------------------------------------

BUILTIN_LIMIT = 600
PUBLIC_IP = "93.184.216.34"
SECRET = "TOP-SECRET-OUTSIDE"


def builtin_registry() -> ToolRegistry:
    registry = ToolRegistry()
    registry.load(str(ROOT / "tools"))
    return registry


def make_workspace(root: Path) -> Path:
    """A workspace with text, binary, big, oddly named and special files, and links out."""
    ws = root / "ws"
    (ws / "docs" / "sub").mkdir(parents=True, exist_ok=True)
    (ws / "notes.md").write_text("# Notes\nLRU evicts the least recently used entry.\n")
    (ws / "docs" / "cache.md").write_text("## Caching\n" + "LFU counts hits per entry. " * 200)
    (ws / "docs" / "sub" / "deep.txt").write_text("TTL expiry and cache stampedes.\n")
    (ws / "image.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (ws / "big.txt").write_text("b" * 20_000)
    (ws / os.fsdecode(b"caf\xe9.md")).write_text("a file whose name is not UTF-8, about caches\n")
    outside = root / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.md").write_text(f"{SECRET} cache eviction LRU\n")
    for name, target in (("link_out", outside / "secret.md"), ("dir_out", outside)):
        with contextlib.suppress(FileExistsError):
            (ws / name).symlink_to(target)
    with contextlib.suppress(FileExistsError):
        (ws / "loop").symlink_to(ws / "loop")
    with contextlib.suppress(FileExistsError):
        os.mkfifo(ws / "fifo")
    return ws


PATHS = [
    ".", "", "notes.md", "docs", "docs/sub/deep.txt", "big.txt", "image.bin", "fifo", "loop",
    "link_out", "dir_out", "dir_out/secret.md", "../outside/secret.md", "/etc/passwd",
    "/proc/self/environ", "..", "../..", "docs/../../outside", "~", "notes.md\x00x",
    "caf\udce9.md", "\ud800", "a" * 5000, "/" * 300, "docs/" * 500,
]  # fmt: skip
HOSTS = [
    "docs.example.org", "a.example.org.", "example.org", "evil.com", "user@docs.example.org",
    "docs.example.org@evil.com", "127.0.0.1", "[::1]", "xn--nxasmq6b.example.org",
    "\u0430pple.example.org", "docs.example.org\x00", "", "%00",
]  # fmt: skip
paths = st.sampled_from(PATHS) | junk
urls = st.one_of(
    st.sampled_from(["", "page", "x?y=1"]).map(lambda path: f"https://docs.example.org/{path}"),
    st.builds(
        lambda scheme, host, port, path: f"{scheme}://{host}{port}/{path}",
        st.sampled_from(["http", "https", "ftp", "file", "", "HTTP", "javascript"]),
        st.sampled_from(HOSTS),
        st.sampled_from(["", ":443", ":80", ":8080", ":0", ":99999", ":-1", ":x"]),
        st.sampled_from(["", "page", "bomb", "redirect", "loop", "binary", "slow"]) | junk,
    ),
    junk,
    huge,
)
content_encodings = st.sampled_from(
    ["", "identity", "gzip", "gzip, gzip", "deflate", "x-gzip", "br", "gzip, " * 5, "junk"]
)
bodies = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"a" * 100_000, gzip.compress(b"a" * 2_000_000), zlib.compress(b"z" * 10**6)]),
    junk.map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@dataclass
class FakeWeb:
    """What the fake network answers for the current example (http_get's `_network` seam)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    addresses: list[str] = field(default_factory=lambda: [PUBLIC_IP])
    error: Exception | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.error is not None:
            raise self.error
        return httpx.Response(self.status, headers=self.headers, stream=httpx.ByteStream(self.body))

    async def resolve(self, host: str, port: int) -> list[str]:
        return self.addresses


CONTENT_TYPES = [
    "text/html", "text/plain; charset=latin-1", "application/json", "image/png",
    "text/plain; charset=nope", "application/x+json", "",
]  # fmt: skip
LOCATIONS = ["/page", "https://evil.com/", "http://[::1", "//docs.example.org/x", "", "\x00"]
ADDRESSES = [
    PUBLIC_IP, "2606:2800:220:1:248:1893:25c8:1946", "127.0.0.1", "10.0.0.1", "169.254.169.254",
    "::ffff:127.0.0.1", "fe80::1%eth0", "0.0.0.0", "224.0.0.1",
]  # fmt: skip
NETWORK_ERRORS = [
    None, None, None, httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
    httpx.RemoteProtocolError("bad"), OSError("boom"), ExceptionGroup("g", [OSError("x")]),
]  # fmt: skip
web_answers = st.builds(
    FakeWeb,
    status=st.sampled_from([200, 200, 200, 204, 301, 302, 404, 500, 999]),
    headers=st.fixed_dictionaries(
        {},
        optional={
            "content-type": st.sampled_from(CONTENT_TYPES),
            "content-encoding": content_encodings,
            "location": st.sampled_from(LOCATIONS) | junk,
        },
    ).map(lambda h: {k: v.encode("ascii", "replace").decode() for k, v in h.items()}),
    body=bodies,
    addresses=st.just([PUBLIC_IP]) | st.lists(st.sampled_from(ADDRESSES), max_size=3),
    error=st.sampled_from(NETWORK_ERRORS),
)


expressions = st.one_of(
    st.lists(st.sampled_from([*list("0123456789+-*/%().e "), "**", "sqrt(", "max(", "9" * 50]),
             max_size=40).map("".join),
    st.sampled_from(["2 ** 10000", "9 ** 9 ** 9", "(" * 300 + "1" + ")" * 300, "1e308 * 10",
                     "round(1, 10**9)", "__import__('os')", "\ud800", "1if 1 else 2"]),
    junk,
)  # fmt: skip
queries = st.one_of(
    # The planted file outside holds "cache eviction LRU": found only if search_docs leaves.
    st.sampled_from(["cache", "LRU eviction", "TTL stampede", "the a of"]),
    junk,
    huge,
)
# Per tool: values of the right type for each parameter (most calls get past validation).
BUILTIN_PARAMS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "calculator": {"expression": expressions},
    "read_file": {"path": paths},
    "list_files": {"path": paths},
    "search_docs": {"query": queries, "k": st.integers(-(10**20), 10**20)},
    "http_get": {"url": urls},
}
any_value = st.one_of(paths, urls, json_values, huge, st.integers(-(10**20), 10**20))


@st.composite
def builtin_calls(draw: st.DrawFn) -> tuple[str, str, FakeWeb]:
    """(tool name, raw arguments, the fake web's answer): well-typed arguments mostly, then
    values of any type, unknown keys, and arguments that are not a JSON object at all."""
    name = draw(st.sampled_from(sorted(BUILTIN_PARAMS)))
    params = BUILTIN_PARAMS[name]
    kind = draw(st.sampled_from(["typed", "typed", "typed", "any", "raw"]))
    if kind == "raw":
        return name, draw(tool_arguments), draw(web_answers)
    values = params if kind == "typed" else dict.fromkeys(params, any_value)
    arguments = draw(st.fixed_dictionaries({}, optional=values))
    if kind == "any":
        arguments |= draw(st.dictionaries(junk | huge, any_value, max_size=2))
    return name, dumped(arguments), draw(web_answers)


@contextlib.contextmanager
def fake_network(registry: ToolRegistry, web: FakeWeb) -> Iterator[None]:
    module: ModuleType = sys.modules[registry.get("http_get").fn.__module__]
    saved = module._network
    module._network = module.Network(transport=httpx.MockTransport(web.handle), resolve=web.resolve)
    try:
        yield
    finally:
        module._network = saved


def tool_context(ws: Path) -> ToolContext:
    return ToolContext(
        workspace=ws,
        docs_dir=ws / "docs",
        http_allow=["*.example.org", "example.org:8080"],
        timeout_s=5,
        max_result_chars=BUILTIN_LIMIT,
        max_bytes=50_000,
    )


async def check_builtin_call(
    registry: ToolRegistry, ws: Path, name: str, arguments: str, web: FakeWeb
) -> ToolOutcome:
    """One call of a built-in tool, directly and through the executor.

    Directly: a str result within the tool's limit, or a one-line ToolError; never another
    exception. Through the executor: the result within max_result_chars. Both: valid UTF-8
    that never shows the planted file outside the workspace.
    """
    ctx = tool_context(ws)
    tool_ = registry.get(name)
    call = ToolCall(name=name, arguments=arguments)
    with fake_network(registry, web):
        executor = ToolExecutor(registry.subset(sorted(BUILTIN_PARAMS)), ctx)
        outcome = await executor.run(call)
        try:
            _, parsed = executor.check(call)
        except ToolError as exc:
            _one_line(str(exc), "refusal")
            assert not outcome.ok
        else:
            try:
                direct = await asyncio.wait_for(tool_(parsed, ctx), timeout=ctx.timeout_s + 5)
            except ToolError as exc:
                _one_line(str(exc), f"{name} error")
                str(exc).encode("utf-8")
            else:
                assert isinstance(direct, str)
                assert len(direct) <= ctx.max_bytes + 2_000, f"{name}: {len(direct)} chars"
                direct.encode("utf-8")
                assert SECRET not in direct
    assert len(outcome.result) <= BUILTIN_LIMIT + TRUNCATION_NOTE
    outcome.result.encode("utf-8")
    outcome.error.encode("utf-8")
    _one_line(outcome.error, f"{name} error")
    assert SECRET not in outcome.result
    return outcome


RUN_PYTHON_CASES = [
    "print('x' * 10_000_000)",
    "import os; print(os.listdir('/'))",
    "open('/etc/passwd').read()",
    "while True: pass",
    "\ud800",
    "import sys; sys.stdout.buffer.write(bytes(range(256)) * 100)",
]
