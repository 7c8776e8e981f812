"""`dytopo eval` as an honest comparison on the scripted backend: the plain baseline, the oracle
and lost answers, the interval around pass@1, cost ratios, problem selection, old records."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from eval_kit import IDS, PROBLEMS, URL, Server, canonical, dytopo, evaluate, short

from dytopo.backends.base import Backend
from dytopo.backends.types import Usage
from dytopo.batch import BatchItem, RunRecord, read_records
from dytopo.eval import run as eval_run
from dytopo.eval.grade import grade_completion
from dytopo.eval.oracle import oracle
from dytopo.eval.plain import MAX_TOKENS
from dytopo.eval.selection import sample, select
from dytopo.eval.summary import server_work, summarize, wilson
from dytopo.eval.table import markdown, pass_cell
from dytopo.managed.resolve import Endpoints
from dytopo.testing import ScriptedBackend

ROOT = Path(__file__).resolve().parents[2]
WRONG = "```python\nreturn []\n```"


def test_plain_is_one_request_with_the_task_graded_like_a_final_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Server(plain=lambda t: WRONG if t == "HumanEval/1" else canonical(t))
    server.install(monkeypatch)

    code, out, err = evaluate(capsys, monkeypatch, tmp_path, "--modes", "plain", "--json")

    assert code == 0, err
    records = read_records(tmp_path / "records.jsonl")
    assert [(r.item, r.mode) for r in records] == [(i, "plain") for i in IDS[:3]]
    assert [r.grade["passed"] for r in records] == [True, False, True]
    assert [r.grade["oracle"]["passed"] for r in records] == [True, False, True]
    assert all(r.ok and r.rounds == 1 and r.usage.requests == 1 for r in records)
    assert all(r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0 for r in records)
    assert records[0].final_answer == canonical("HumanEval/0")
    # exactly one call per problem, and nothing but the task in it
    assert server.runs() == []
    assert server.plain_runs() == IDS[:3]
    asked = server.requests[0]
    assert [m.role for m in asked.messages] == ["user"]
    assert "def has_close_elements(" in str(asked.messages[0].content)
    assert (asked.max_tokens, asked.sampling.temperature, asked.json_schema, asked.tools) == (
        MAX_TOKENS,
        0.0,
        None,
        None,
    )
    events = [json.loads(x) for x in Path(records[0].trace or "").read_text().splitlines()]
    assert [e["event"] for e in events] == ["plain_request", "plain_reply"]
    assert events[1]["content"] == records[0].final_answer
    (row,) = json.loads(out)["modes"]
    assert (row["mode"], row["passed"], row["problems"], row["requests"]) == ("plain", 2, 3, 1.0)
    assert (row["oracle_rate"], row["lost"], row["tokens_x_base"]) == (0.6667, 0, 1.0)
    assert row["server_work"] == round(sum(server_work(r) for r in records) / 3, 2)


def test_a_plain_call_the_server_refuses_is_a_failed_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dytopo.errors import BackendUnavailable

    gone = BackendUnavailable("server gone", url=URL)
    Server(plain=lambda t: gone if t == "HumanEval/1" else canonical(t)).install(monkeypatch)

    code, out, err = evaluate(capsys, monkeypatch, tmp_path, "--modes", "plain", "--json")

    assert code == 0, err
    failed = read_records(tmp_path / "records.jsonl")[1]
    assert (failed.ok, failed.final_answer, failed.grade["passed"]) == (False, "", False)
    assert "server gone" in failed.error
    (row,) = json.loads(out)["modes"]
    assert (row["passed"], row["failures"]) == (2, 1)


# Passes the docstring's two examples of HumanEval/0 (so the check takes it), fails its tests.
FITS_THE_EXAMPLES = (
    "```python\ndef has_close_elements(numbers, threshold):\n    return len(numbers) > 3\n```"
)


def _lost_server() -> Server:
    """The developer's code is the final answer (humaneval.yaml). HumanEval/0: it passes the
    task's examples but not the tests, and the tester's fixed version passes (lost, where the
    tester runs). HumanEval/1: it passes. HumanEval/2: it fails, and so does the tester's."""

    def developer(task_id: str) -> str:
        if task_id == "HumanEval/0":
            return FITS_THE_EXAMPLES
        return canonical(task_id) if task_id == "HumanEval/1" else WRONG

    def private(task_id: str, agent: str) -> str:
        if agent != "tester":
            return "looks right to me"
        return short(task_id) if task_id == "HumanEval/0" else WRONG.replace("[]", "0.5")

    return Server(developer, private=private)


def test_an_agents_passing_code_lost_by_the_final_answer_is_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _lost_server().install(monkeypatch)
    # Without the check, which would end the run on the developer's code before the tester
    # writes: what is measured here is the eval's accounting of a lost answer.
    unchecked = tmp_path / "humaneval-unchecked.yaml"
    text = (ROOT / "topologies" / "humaneval.yaml").read_text()
    unchecked.write_text(text.replace("  tests_from: task", "  # no check"))

    code, out, err = evaluate(
        capsys,
        monkeypatch,
        tmp_path,
        "--modes",
        "plain,single,dynamic",
        "--topology",
        str(unchecked),
    )

    assert code == 0, err
    kept = {r.key: r for r in read_records(tmp_path / "records.jsonl")}
    lost, won, none = (kept[(t, "dynamic")].grade for t in IDS[:3])
    assert (lost["passed"], lost["oracle"]["passed"]) == (False, True)
    assert lost["oracle"]["source"] == "tester round 1 private"
    assert (won["passed"], won["oracle"]) == (
        True,
        {"passed": True, "source": "final", "candidates": 0},
    )
    assert (none["passed"], none["oracle"]["passed"]) == (False, False)
    assert none["oracle"]["candidates"] == 1  # the tester's wrong version was graded
    # single: the developer alone; its code is the final answer, nothing else to grade
    alone = kept[("HumanEval/0", "single")].grade
    assert (alone["passed"], alone["oracle"]) == (
        False,
        {"passed": False, "source": "", "candidates": 0},
    )
    assert kept[("HumanEval/0", "plain")].grade["oracle"]["passed"] is False
    assert "HumanEval/0 dynamic: failed" in err
    assert "oracle passed (LOST: tester round 1 private)" in err

    code, out, err = evaluate(
        capsys,
        monkeypatch,
        tmp_path,
        "--modes",
        "plain,single,dynamic",
        "--topology",
        str(unchecked),
        "--json",
    )

    assert code == 0, err
    rows = {row["mode"]: row for row in json.loads(out)["modes"]}
    assert [rows[m]["lost"] for m in ("plain", "single", "dynamic")] == [0, 0, 1]
    assert [rows[m]["oracle_passed"] for m in ("plain", "single", "dynamic")] == [1, 1, 2]
    assert [rows[m]["passed"] for m in ("plain", "single", "dynamic")] == [1, 1, 1]


def _trace(path: Path, *events: dict[str, object]) -> Path:
    lines = [json.dumps(e) for e in events]
    path.write_text("\n".join([*lines, '{"event": "agent_out']) + "\n")  # a torn last line
    return path


def test_the_oracle_reads_private_and_public_of_every_agent_output(tmp_path: Path) -> None:
    p = PROBLEMS["HumanEval/0"]

    def grade(code: str) -> object:
        return grade_completion(p["prompt"], code, p["test"], p["entry_point"])

    final = grade_completion(p["prompt"], "    return None\n", p["test"], p["entry_point"])
    trace = _trace(
        tmp_path / "t.jsonl",
        {"event": "round_start", "round": 1},
        {"event": "agent_output", "agent": "developer", "round": 1, "private": WRONG, "public": ""},
        {"event": "agent_output", "agent": "tester", "round": 1, "private": WRONG, "public": "ok"},
        {
            "event": "agent_output",
            "agent": "critic",
            "round": 2,
            "private": "no code",
            "public": short("HumanEval/0"),
        },
    )

    found = oracle(final, trace, p["entry_point"], grade)  # type: ignore[arg-type]
    assert (found.passed, found.source, found.candidates) == (True, "critic round 2 public", 2)
    missing = oracle(final, tmp_path / "none.jsonl", p["entry_point"], grade)  # type: ignore[arg-type]
    assert (missing.passed, missing.candidates) == (False, 0)


@pytest.mark.parametrize(
    ("won", "total", "low", "high"),
    [(0, 10, 0.0, 27.8), (5, 10, 23.7, 76.3), (10, 10, 72.2, 100.0), (29, 40, 57.2, 83.9)],
)
def test_wilson_score_interval(won: int, total: int, low: float, high: float) -> None:
    lo, hi = wilson(won, total)
    assert (round(lo * 100, 1), round(hi * 100, 1)) == (low, high)


def _record(
    item: str, mode: str, prompt: int, cached: int, generated: int, passed: bool
) -> RunRecord:
    usage = Usage(
        prompt_tokens=prompt, cached_tokens=cached, completion_tokens=generated, requests=2
    )
    return RunRecord.model_validate(
        {"item": item, "mode": mode, "ok": True, "usage": usage, "grade": {"passed": passed}}
    )


def test_summary_interval_server_work_and_ratios_on_shared_problems() -> None:
    records = [
        _record("a", "plain", 100, 0, 100, True),
        _record("b", "plain", 100, 50, 100, False),
        _record("a", "dynamic", 600, 500, 200, True),
        _record("b", "dynamic", 600, 300, 200, True),
        _record("c", "dynamic", 9_000, 0, 9_000, False),  # no plain run of c: not in the ratio
        _record("a", "broadcast", 1_000, 0, 200, False),
    ]

    plain, dynamic, broadcast = summarize(records, ["plain", "dynamic", "broadcast"])

    assert (dynamic.problems, dynamic.passed, dynamic.oracle_rate, dynamic.lost) == (3, 2, None, 0)
    assert (plain.server_work, plain.tokens) == (175.0, 200.0)
    assert dynamic.server_work_median == 500.0  # 300, 500 and 18,000
    assert (plain.tokens_x_base, dynamic.tokens_x_base) == (1.0, 4.0)  # 1600 / 400 on a and b
    assert dynamic.work_x_base == round(800 / 350, 3)
    assert broadcast.tokens_x_base == 6.0
    assert pass_cell(dynamic) == "66.7% [20.8, 93.9]"
    assert "| dynamic | 2/3 | 66.7% [20.8, 93.9] | - | 0 |" in markdown([dynamic])


def test_problems_by_id_or_number_in_benchmark_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Server()
    server.install(monkeypatch)
    args = ["eval", "--modes", "plain", "--backend-url", URL, "--out", str(tmp_path), "--json"]

    code, out, err = dytopo(capsys, monkeypatch, *args, "--problems", "HumanEval/17, 3,17")

    assert code == 0, err
    assert json.loads(out)["items"] == ["HumanEval/3", "HumanEval/17"]
    assert server.plain_runs() == ["HumanEval/3", "HumanEval/17"]


def test_a_seeded_sample_is_reproducible_sorted_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [BatchItem(id=i, task="t") for i in IDS]
    chosen = [i.id for i in sample(items, 8, seed=2026)]
    assert chosen == [i.id for i in sample(items, 8, seed=2026)]
    assert chosen == sorted(chosen, key=IDS.index)
    assert chosen != [i.id for i in sample(items, 8, seed=2027)]
    assert chosen != IDS[:8]
    assert set(chosen) < {i.id for i in sample(items, 9, seed=2026)}  # growing keeps what ran
    first = Server()
    first.install(monkeypatch)
    args = ["eval", "--modes", "plain", "--backend-url", URL, "--out", str(tmp_path)]
    args += ["--sample", "3", "--seed", "5", "--json"]

    code, out, err = dytopo(capsys, monkeypatch, *args)

    assert code == 0, err
    expected = [i.id for i in select(items, sample_size=3, seed=5)]
    assert json.loads(out)["items"] == expected == first.plain_runs()
    again = Server()
    again.install(monkeypatch)
    code, out, err = dytopo(capsys, monkeypatch, *args)
    assert code == 0, err
    assert (json.loads(out)["skipped"], again.plain_runs()) == (3, [])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--problems", "3", "--limit", "2"], "--problems and --limit each choose the problems"),
        (["--sample", "4", "--limit", "2"], "--sample and --limit each choose the problems"),
        (["--problems", "3", "--sample", "2"], "--problems and --sample each choose"),
        (["--seed", "7"], "--seed 7 chooses a sample: give it with --sample N"),
        (["--problems", "3,HumanEval/999"], "--problems: no problem 'HumanEval/999' in this"),
        (["--problems", " , "], "--problems: give problem ids"),
        (["--sample", "0"], "--sample 0: give a number of problems from 1 to 164"),
        (["--sample", "165"], "--sample 165: give a number of problems from 1 to 164"),
        (["--modes", "plain,solo"], "--modes: 'solo' is not a mode; give some of plain, dynamic"),
        (["--model", "gpt-9"], "--model 'gpt-9' is not an embedded model"),
    ],
)
def test_bad_selections_are_one_line_and_exit_2(
    args: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, _, err = dytopo(capsys, monkeypatch, "eval", *args, "--out", str(tmp_path))

    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not (tmp_path / "records.jsonl").exists()


OLD_RECORD = {  # as `dytopo eval` wrote them before plain mode and the oracle
    "item": "HumanEval/0",
    "mode": "single",
    "ok": True,
    "final_answer": "The numbers are close.",
    "rounds": 1,
    "halt_reason": "manager",
    "usage": {
        "prompt_tokens": 2400,
        "completion_tokens": 900,
        "cached_tokens": 1900,
        "requests": 3,
    },
    "wall_s": 10.5,
    "run_id": "3f2a9c81d0b4",
    "trace": "runs/eval-r1/traces/HumanEval_0-single.jsonl",
    "error": "",
    "server": None,
    "grade": {
        "passed": False,
        "status": "no code in the answer",
        "kind": "none",
        "completion": "",
        "duration_s": 0.0,
        "output_tail": "",
    },
}


def test_records_from_before_the_oracle_load_resume_and_show_no_oracle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Server()
    server.install(monkeypatch)
    code, _, err = evaluate(capsys, monkeypatch, tmp_path, "--modes", "single", "--limit", "1")
    assert code == 0, err
    (tmp_path / "records.jsonl").write_text(json.dumps(OLD_RECORD) + "\n")

    code, out, err = evaluate(
        capsys, monkeypatch, tmp_path, "--modes", "plain,single", "--limit", "1", "--json"
    )

    assert code == 0, err
    assert server.runs() == ["HumanEval/0"]  # the old single run is not redone
    assert server.plain_runs() == ["HumanEval/0"]
    plain, single = json.loads(out)["modes"]
    assert (single["problems"], single["passed"], single["oracle_checked"]) == (1, 0, 1 - 1)
    assert (single["oracle_rate"], single["lost"], single["server_work"]) == (None, 0, 1400.0)
    assert (plain["oracle_checked"], plain["oracle_rate"]) == (1, 1.0)
    code, out, err = evaluate(
        capsys, monkeypatch, tmp_path, "--modes", "plain,single", "--limit", "1"
    )
    assert code == 0, err
    assert "0.0% [0.0, 79.3]" in out  # pass@1 of the old record


def test_without_a_server_one_embedded_server_on_the_model_asked_serves_every_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Server()
    server.install(monkeypatch)
    started: list[tuple[str | None, str | None]] = []
    asked: list[str] = []

    @asynccontextmanager
    async def embedded(
        chat: str | None, embed: str | None, *, model: str | None = None
    ) -> AsyncIterator[Endpoints]:
        started.append((chat, model))
        yield Endpoints(chat_url="http://127.0.0.1:18007", embed_url=None, source="embedded")

    def plain_backend(topology: Any, url: str) -> Backend:
        asked.append(url)
        return ScriptedBackend(responder=server.respond)

    monkeypatch.delenv("DYTOPO_BASE_URL", raising=False)
    monkeypatch.setattr(eval_run, "endpoints", embedded)
    monkeypatch.setattr(eval_run, "plain_backend", plain_backend)
    args = ["eval", "--limit", "2", "--modes", "plain,single", "--rounds", "1"]

    code, _, err = dytopo(
        capsys, monkeypatch, *args, "--model", "smollm2-135m", "--out", str(tmp_path), "--json"
    )

    assert code == 0, err
    assert started == [(None, "smollm2-135m")]  # one server for the whole eval
    assert asked == ["http://127.0.0.1:18007"]  # the plain calls go to it too
    assert server.runs() == ["HumanEval/0", "HumanEval/1"]
