"""A comparison on disk: compare.json (the rows) and index.html (the table, a link per report)."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from pydantic import BaseModel, Field

from dytopo.compare.rows import ModeRow, relative_tokens


class Comparison(BaseModel):
    """What was compared, and the rows so far (in the order the modes ran)."""

    topology: str
    source: str
    task: str
    seed: int
    rounds: int | None
    """Fixed rounds in every mode (min = max); None: each run's own min/max_rounds."""
    modes: list[str]
    """The modes asked for; `rows` has those that finished or failed."""
    started: str
    out_dir: str
    rows: list[ModeRow] = Field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        for row, ratio in zip(data["rows"], relative_tokens(self.rows), strict=True):
            row["tokens_vs_first"] = ratio
        data["index"] = str(Path(self.out_dir) / "index.html")
        return data


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,  # the task and error messages are data, never markup
        undefined=jinja2.StrictUndefined,
    )


def render_index(comparison: Comparison) -> str:
    out = Path(comparison.out_dir)
    rows = []
    for row, ratio in zip(comparison.rows, relative_tokens(comparison.rows), strict=True):
        view = row.model_dump()
        view["report_href"] = os.path.relpath(row.report, out) if row.report else None
        view["trace_name"] = os.path.relpath(row.trace, out) if row.trace else None
        rows.append((view, ratio))
    return _env().get_template("index.html.jinja").render(c=comparison, rows=rows)


def write_comparison(comparison: Comparison) -> Path:
    """Write compare.json and index.html into the comparison's folder; the index's path. Each
    file is replaced whole (written beside, then renamed), so a reader never sees half."""
    out = Path(comparison.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _replace(out / "compare.json", json.dumps(comparison.as_json(), indent=2, ensure_ascii=False))
    index = out / "index.html"
    _replace(index, render_index(comparison))
    return index


def _replace(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
