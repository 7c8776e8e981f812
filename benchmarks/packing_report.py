"""Prompt tokens of a run before and after context packing, from its trace.

.venv/bin/python benchmarks/packing_report.py runs/TRACE.jsonl
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from dytopo.swarm.trace import read_trace


def main() -> None:
    events = read_trace(Path(sys.argv[1]))
    full: dict[str, int] = defaultdict(int)
    sent: dict[str, int] = defaultdict(int)
    dropped: dict[str, int] = defaultdict(int)
    for e in events:
        packing = e.get("packing") or {}
        if not packing:
            continue
        who = e.get("agent") or "manager"  # manager_goal / manager_decision events
        full[who] += packing.get("full_tokens", 0)
        sent[who] += packing.get("prompt_tokens", 0)
        dropped[who] += len(e.get("dropped") or [])
    print("| who | prompt tokens unpacked | packed | saved | items dropped |")
    print("| --- | --- | --- | --- | --- |")
    for who in sorted(full):
        saved = 1 - sent[who] / full[who] if full[who] else 0.0
        print(f"| {who} | {full[who]} | {sent[who]} | {saved:.0%} | {dropped[who]} |")
    total_full, total_sent = sum(full.values()), sum(sent.values())
    saved = 1 - total_sent / total_full if total_full else 0.0
    print(f"| total | {total_full} | {total_sent} | {saved:.0%} | {sum(dropped.values())} |")


if __name__ == "__main__":
    main()
