"""A corpus of malformed model replies, as local models really produce them."""

from __future__ import annotations

import json

VALID_STEP = {
    "public": "Found three facts about LRU.",
    "private": "LRU evicts the least recently used entry; O(1) with a list and a map.",
    "query": "A comparison table of LRU and LFU hit rates.",
    "key": "Three sourced facts about LRU eviction.",
}


def malformed_steps() -> list[str]:
    """Replies that must never validate as an AgentOutput."""
    good = json.dumps(VALID_STEP)
    corpus = [good[:cut] for cut in range(0, len(good) - 1, 2)]  # truncated at every 2nd char
    corpus += [
        good.replace('"', "'"),  # single quotes
        good[:-1] + ",}",  # trailing comma
        good.replace(", ", ",\n").replace('"}', '",}'),
        f"Sure! Here is my answer:\n{good}",  # prose before
        f"{good}\nHope this helps!",  # prose after
        f"```json\n{good}\n```",  # markdown fence
        json.dumps({**VALID_STEP, "public": 42}),  # wrong type
        json.dumps({**VALID_STEP, "query": ["a", "b"]}),
        json.dumps({**VALID_STEP, "key": None}),
        json.dumps({**VALID_STEP, "extra": "field"}),  # unknown field
        json.dumps([VALID_STEP]),  # array instead of object
        json.dumps("just a string"),
        "",
        "null",
        "{}",
        "{{}}",
        "<tool_call>{}</tool_call>",
        json.dumps({**VALID_STEP, "private": "x" * 5000}),  # over the length cap
    ]
    for missing in VALID_STEP:
        corpus.append(json.dumps({k: v for k, v in VALID_STEP.items() if k != missing}))
    for field in VALID_STEP:  # every field with every wrong JSON type
        for wrong in (7, 2.5, True, None, ["x"], {"x": "y"}):
            corpus.append(json.dumps({**VALID_STEP, field: wrong}))
    return corpus


def malformed_tool_calls() -> list[tuple[str, str]]:
    """(tool name, raw arguments) pairs that must be refused by validation."""
    good = json.dumps({"text": "hello", "times": 2})
    calls = [("echo", good[:cut]) for cut in range(1, len(good) - 1)]
    calls += [
        ("echo", good.replace('"', "'")),
        ("echo", good[:-1] + ",}"),
        ("echo", "[1, 2]"),
        ("echo", '"hello"'),
        ("echo", "{}"),  # missing required argument
        ("echo", json.dumps({"text": 5})),  # wrong type
        ("echo", json.dumps({"text": "x", "times": "many"})),
        ("echo", json.dumps({"text": "x", "evil": "__import__('os')"})),  # unknown argument
        ("echo", f"call echo with {good}"),
        ("ech0", good),  # unknown tools
        ("", good),
        ("rm_rf", good),
        ("echo; rm -rf /", good),
    ]
    for wrong in (None, ["x"], {"x": "y"}, 3, 2.5):
        calls.append(("echo", json.dumps({"text": wrong})))
    for wrong in ("many", [1], {"n": 1}, 2.5, None):
        calls.append(("echo", json.dumps({"text": "x", "times": wrong})))
    return calls
