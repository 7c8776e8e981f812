"""Fuzz DyTopo on demand: many more examples of the targets tests/unit/test_fuzz.py runs in CI.

.venv/bin/python benchmarks/fuzz.py                      # 10,000 per model-reply target
.venv/bin/python benchmarks/fuzz.py --replies 500 --topologies 200 --tools 200 --seed 1

Targets (properties in tests/unit/fuzzing.py): mutated topology files through `dytopo validate`
(in-process, plus batches through the real command), model replies through the structured
ladder, the tool-call ladder and a whole agent step, arbitrary arguments through the built-in
tools (run_python: a fixed handful, each costs a sandbox). Every example runs even after a
failure; the table counts them. Exit status 1 when any example failed.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "unit"), str(ROOT / "tests")]

import fuzzing  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dytopo.backends.types import ToolCall  # noqa: E402
from dytopo.tools.executor import ToolExecutor  # noqa: E402


@dataclass
class Target:
    name: str
    examples: int = 0
    failures: list[str] = field(default_factory=list)
    known: Counter[str] = field(default_factory=Counter)
    """Failures showing a bug already filed as a strict xfail test (fuzzing.KNOWN_BUGS)."""
    seconds: float = 0.0
    slowest: float = 0.0

    def record(self, check: Callable[[], Any], shown: Callable[[], str]) -> None:
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:  # every kind of failure is counted, none stops the run
            known = fuzzing.known_bug(exc)
            if known:
                self.known[known] += 1
            else:
                where = traceback.extract_tb(exc.__traceback__)[-1]
                self.failures.append(
                    f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
                    f"(at {Path(where.filename).name}:{where.lineno}) for {shown()[:300]}"
                )
        elapsed = time.perf_counter() - started
        self.examples += 1
        self.slowest = max(self.slowest, elapsed)


def fuzz(target: Target, strategy: st.SearchStrategy[Any], examples: int, at: int) -> None:
    """Run `target`'s check over `examples` drawn values (generation only: no shrinking)."""
    if examples <= 0:
        return

    @seed(at)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(value: Any) -> None:
        target.record(lambda: CHECKS[target.name](value), lambda: repr(value))

    started = time.perf_counter()
    run()
    target.seconds += time.perf_counter() - started


_scratch = Path(tempfile.mkdtemp(prefix="dytopo-fuzz-"))
_registry = fuzzing.builtin_registry()
_workspace = fuzzing.make_workspace(_scratch)


def _topology(content: bytes) -> None:
    path = _scratch / "t.yaml"
    path.write_bytes(content)
    fuzzing.check_validate(path)


def _builtin(drawn: tuple[str, str, fuzzing.FakeWeb]) -> None:
    asyncio.run(fuzzing.check_builtin_call(_registry, _workspace, *drawn))


CHECKS: dict[str, Callable[[Any], Any]] = {
    "topology: dytopo validate (in-process)": _topology,
    "replies: structured ladder": lambda case: asyncio.run(fuzzing.check_structured(case)),
    "replies: tool-call ladder": lambda case: asyncio.run(fuzzing.check_tool_phase(case)),
    "replies: agent step, both ladders": lambda drawn: asyncio.run(
        fuzzing.check_agent_step(*drawn)
    ),
    "tools: built-in tool arguments": _builtin,
}


def validate_batches(target: Target, files: int, at: int, batch: int = 50) -> None:
    """Mutated files through the real `dytopo validate` process, `batch` files per process."""
    if files <= 0:
        return
    contents: list[bytes] = []

    @seed(at)
    @settings(max_examples=files, database=None, deadline=None, phases=[Phase.generate])
    @given(fuzzing.mutated_topology())
    def collect(content: bytes) -> None:
        contents.append(content)

    collect()
    folder = _scratch / "batch"
    folder.mkdir(exist_ok=True)
    for start in range(0, len(contents), batch):
        paths = []
        for k, content in enumerate(contents[start : start + batch]):
            path = folder / f"m{start + k}.yaml"
            path.write_bytes(content)
            paths.append(path)
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "dytopo", "validate", *map(str, paths)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        elapsed = time.perf_counter() - began
        target.seconds += elapsed
        target.slowest = max(target.slowest, elapsed)
        output = done.stdout + done.stderr
        try:
            fuzzing.check_validate_lines(paths, done.returncode, output)
        except AssertionError as exc:
            target.failures.append(f"batch {start}: {' '.join(str(exc).split())[:300]}")
        target.examples += len(paths)


def run_python(target: Target) -> None:
    ctx = fuzzing.tool_context(_workspace).model_copy(update={"timeout_s": 3})
    executor = ToolExecutor([_registry.get("run_python")], ctx)
    for code in fuzzing.RUN_PYTHON_CASES:

        def check(code: str = code) -> None:
            import json

            call = ToolCall(name="run_python", arguments=json.dumps({"code": code}))
            outcome = asyncio.run(executor.run(call))
            assert len(outcome.result) <= ctx.max_result_chars + 60
            outcome.result.encode("utf-8")
            assert "\n" not in outcome.error

        started = time.perf_counter()
        target.record(check, lambda code=code: repr(code))  # type: ignore[misc]
        target.seconds += time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=10_000, help="examples per reply target")
    parser.add_argument("--topologies", type=int, default=2_000, help="in-process validations")
    parser.add_argument("--processes", type=int, default=200, help="files via the real command")
    parser.add_argument("--tools", type=int, default=2_000, help="built-in tool calls")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (reproducible runs)")
    parser.add_argument("--show", type=int, default=3, help="failures printed per target")
    parser.add_argument(
        "--allow-known",
        action="store_true",
        help="exit 0 when every failure shows a known bug (filed as a strict xfail test)",
    )
    args = parser.parse_args()

    targets = {name: Target(name) for name in CHECKS}
    cases = fuzzing.ladder_cases()
    plan: list[tuple[str, st.SearchStrategy[Any], int]] = [
        ("topology: dytopo validate (in-process)", fuzzing.mutated_topology(), args.topologies),
        ("replies: structured ladder", cases, args.replies),
        ("replies: tool-call ladder", cases, args.replies),
        ("replies: agent step, both ladders", st.tuples(cases, st.booleans()), args.replies),
        ("tools: built-in tool arguments", fuzzing.builtin_calls(), args.tools),
    ]
    for name, strategy, examples in plan:
        print(f"fuzzing {name}: {examples} examples ...", file=sys.stderr, flush=True)
        fuzz(targets[name], strategy, examples, args.seed)
    process = Target("topology: dytopo validate (subprocess)")
    validate_batches(process, args.processes, args.seed)
    python = Target("tools: run_python (fixed cases)")
    run_python(python)
    rows = [*targets.values(), process, python]

    print("| target | examples | failures | known bugs | time s | slowest example s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for t in rows:
        print(
            f"| {t.name} | {t.examples} | {len(t.failures)} | {sum(t.known.values())} "
            f"| {t.seconds:.1f} | {t.slowest:.2f} |"
        )
    known = sum((t.known for t in rows), Counter[str]())
    for name, count in known.most_common():
        print(f"\nknown bug, {count} examples: {name}")
    failed = [t for t in rows if t.failures]
    for t in failed:
        print(f"\n{t.name}: {len(t.failures)} failures, first {args.show}:", file=sys.stderr)
        for line in t.failures[: args.show]:
            print(f"  {line}", file=sys.stderr)
    return 1 if failed or (known and not args.allow_known) else 0


if __name__ == "__main__":
    sys.exit(main())
