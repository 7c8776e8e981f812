"""The Markdown table of a `dytopo eval` output folder, over the problems every mode finished
(a stopped benchmark leaves its last problem part-done), with the dynamic vs broadcast line.

    .venv/bin/python benchmarks/eval_table.py runs/humaneval-compare-s40
"""

from __future__ import annotations

import sys
from pathlib import Path

from dytopo.batch.models import RunRecord
from dytopo.eval.summary import summarize
from dytopo.eval.table import comparisons, markdown

MODES = ("plain", "single", "dynamic", "broadcast", "random")


def main(folder: Path) -> None:
    lines = (folder / "records.jsonl").read_text().splitlines()
    records = [RunRecord.model_validate_json(line) for line in lines if line.strip()]
    modes = [m for m in MODES if any(r.mode == m for r in records)]
    done = {r.item for r in records}
    for mode in modes:
        done &= {r.item for r in records if r.mode == mode}
    kept = [r for r in records if r.item in done]
    print(f"{len(done)} problems finished in every mode ({', '.join(modes)})\n")
    print(markdown(summarize(kept, modes)))
    print("\n".join(comparisons(kept, modes)))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/humaneval-compare-s40"))
