"""Share of need/offer descriptors that repeat text from the role cards (issue 20: target 0).

A descriptor "repeats" a card when it shares a run of 6 words with any card in agents/ (the
role cards' example descriptors were copied verbatim by a 1.5B model before they were removed).

    .venv/bin/python benchmarks/descriptor_copies.py runs/humaneval-compare-s40/traces/*.jsonl
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N = 6


def grams(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9_]+", text.lower())
    return {tuple(words[i : i + N]) for i in range(len(words) - N + 1)}


def main(paths: list[str]) -> None:
    cards = set().union(*(grams(p.read_text()) for p in (ROOT / "agents").glob("*.md")))
    total = copied = 0
    examples: list[str] = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            event = json.loads(line)
            if event.get("event") != "agent_output" or not event.get("ok"):
                continue
            for field in ("query", "key"):
                text = event.get(field) or ""
                total += 1
                if grams(text) & cards:
                    copied += 1
                    examples.append(text)
    share = copied / total if total else 0.0
    print(f"{copied} of {total} descriptors repeat role-card text ({share:.1%})")
    for text in examples[:5]:
        print("  e.g.", text)


if __name__ == "__main__":
    main(sys.argv[1:])
