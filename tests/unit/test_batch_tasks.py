"""A batch's task file: bare strings and objects, ids, overrides; one line per bad line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dytopo.batch import with_overrides
from dytopo.batch.tasks import read_tasks
from dytopo.errors import ConfigError
from dytopo.topology import AgentSpec, Topology

TOPOLOGY = Topology(name="t", agents=[AgentSpec(id="a")])


def tasks(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tasks.jsonl"
    path.write_text(text, encoding="utf-8")
    return path


def check(overrides: dict[str, object]) -> None:
    with_overrides(TOPOLOGY, None, overrides)


def test_strings_and_objects_with_default_ids_and_overrides(tmp_path: Path) -> None:
    path = tasks(
        tmp_path,
        '"first task"\n\n{"task": "second"}\n'
        '{"id": "cache-7", "task": "third", "overrides": {"rounds": 2, "seed": 3}}\n',
    )

    items = read_tasks(path, check)

    assert [(i.id, i.task, i.overrides) for i in items] == [
        ("line-1", "first task", {}),
        ("line-3", "second", {}),  # blank lines are skipped but counted
        ("cache-7", "third", {"rounds": 2, "seed": 3}),
    ]
    assert [i.meta["line"] for i in items] == [1, 3, 4]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{oops", r"tasks.jsonl:2: not JSON \(Expecting property name .* at column 2\)"),
        ("42", r"tasks.jsonl:2: give a task text .* not int"),
        ('["a"]', r"tasks.jsonl:2: give a task text .* not list"),
        ('{"task": "x", "prompt": "y"}', r"tasks.jsonl:2: unknown field prompt; a line may have"),
        ('{"id": "x"}', r'tasks.jsonl:2: "task" must be a non-empty text'),
        ('"   "', r'tasks.jsonl:2: "task" must be a non-empty text'),
        ('{"task": "x", "id": 7}', r'tasks.jsonl:2: "id" must be a non-empty text'),
        ('{"task": "x", "overrides": [1]}', r'tasks.jsonl:2: "overrides" must be an object'),
        (
            '{"task": "x", "overrides": {"temperature": 1}}',
            r"tasks.jsonl:2: overrides: unknown override temperature: a batch item may set",
        ),
        (
            '{"task": "x", "overrides": {"rounds": 99}}',
            r"tasks.jsonl:2: overrides: max_rounds 99: Input should be less than or equal to 50",
        ),
        ('{"task": "x", "id": "line-1"}', r"tasks.jsonl:2: id 'line-1' repeats line 1"),
        ("[" * 100_000 + "]" * 100_000, r"tasks.jsonl:2: nested too deeply to read; give a task"),
        (
            '{"task": "x", "overrides": {"rounds": ' + "[" * 900 + "]" * 900 + "}}",
            r"tasks.jsonl:2: overrides: max_rounds \[\[\[\.\.\.\]\]\]: Input should be a valid",
        ),
        (
            '{"task": "x", "overrides": {"' + "k" * 10_000 + '": 1}}',
            r"tasks.jsonl:2: overrides: unknown override k{40}\.\.\.: a batch item may set",
        ),
    ],
)
def test_a_bad_line_is_one_line_naming_file_and_line(
    tmp_path: Path, line: str, problem: str
) -> None:
    path = tasks(tmp_path, f'"fine"\n{line}\n"also fine"\n')

    with pytest.raises(ConfigError) as error:
        read_tasks(path, check)

    (shown,) = str(error.value).splitlines()
    assert shown.startswith(str(path))
    assert re.search(problem, shown), shown
    assert len(shown) < len(str(path)) + 200  # a huge value is clipped, not printed


def test_every_bad_line_is_listed_and_an_empty_or_missing_file_is_refused(
    tmp_path: Path,
) -> None:
    path = tasks(tmp_path, '{\n"ok"\n5\n')
    with pytest.raises(ConfigError) as error:
        read_tasks(path)
    assert [line.split(": ")[0] for line in str(error.value).splitlines()] == [
        f"{path}:1",
        f"{path}:3",
    ]

    with pytest.raises(ConfigError, match=r"tasks.jsonl: no tasks"):
        read_tasks(tasks(tmp_path, "\n  \n"))
    with pytest.raises(ConfigError, match=r"nothing.jsonl: no such task file"):
        read_tasks(tmp_path / "nothing.jsonl")
