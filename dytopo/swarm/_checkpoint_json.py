"""A checkpoint's JSON, with what earlier writes of the same run encoded reused.

A run's state grows every round (memories, transcript, rounds) and is written whole after every
round, so encoding it from scratch costs O(rounds) each time and O(rounds^2) over a run, on a
thread that holds the GIL while it encodes. The state's lists only grow at their end and their
items are never edited once added (checkpoint._snapshot relies on the same), so the JSON of the
items a list already had is kept and only the new items are encoded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pydantic_core
from pydantic import BaseModel

from dytopo.swarm.state import RunState

_GROWING = ("memory", "transcript", "rounds")


def to_json(value: Any) -> bytes:
    """`value` (JSON-ready: a model_dump in JSON mode) as UTF-8 JSON. A NaN (an embedder may
    return one) stays a NaN, so it reads back. A lone surrogate (an agent's error text may hold
    one) has no UTF-8 form: the json module then writes it as "?"."""
    try:
        return pydantic_core.to_json(value, inf_nan_mode="constants")
    except ValueError:
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "replace")


class _List:
    """The JSON of one list that grows at its end."""

    def __init__(self) -> None:
        self.items: list[BaseModel] = []
        self.parts: list[bytes] = []

    def encode(self, items: Sequence[BaseModel]) -> bytes:
        seen = len(self.items)
        if len(items) < seen or any(a is not b for a, b in zip(self.items, items, strict=False)):
            self.items, self.parts, seen = [], [], 0  # not the list seen before: start over
        for item in items[seen:]:
            self.parts.append(to_json(item.model_dump(mode="json")))
            self.items.append(item)  # held, so its id is not reused by another object
        return b"[" + b",".join(self.parts) + b"]"


class StateEncoder:
    """Encodes one run's states, each write reusing the items the previous ones encoded."""

    def __init__(self) -> None:
        self.memory: dict[str, _List] = {}
        self.transcript = _List()
        self.rounds = _List()

    def encode(self, state: RunState) -> bytes:
        rest = to_json(state.model_dump(mode="json", exclude=set(_GROWING)))
        memory = b",".join(
            to_json(agent) + b":" + self.memory.setdefault(agent, _List()).encode(items)
            for agent, items in state.memory.items()
        )
        grown = (
            b'"memory":{' + memory + b"}",
            b'"transcript":' + self.transcript.encode(state.transcript),
            b'"rounds":' + self.rounds.encode(state.rounds),
        )
        return rest[:-1] + b"," + b",".join(grown) + b"}"  # rest is an object: never empty

    def encode_with(self, head: dict[str, Any], state: RunState) -> bytes:
        """`head` (a JSON-ready object without the state) with the state as its last key."""
        return to_json(head)[:-1] + b',"state":' + self.encode(state) + b"}"
