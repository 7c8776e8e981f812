"""The embedded chat server's command line."""

from pathlib import Path

import pytest

from dytopo.managed import models
from dytopo.managed.server import chat_args


def test_the_embedded_chat_server_runs_with_the_measured_prompt_cache_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(models, "ensure_model", lambda model: Path("/models/chat.gguf"))
    args = chat_args(slots=2, ctx_per_slot=4096)
    # Written out, so a build with other defaults still runs what benchmarks/server_cache.md
    # measured: a host prompt cache restored into any slot, one KV pool per slot.
    assert args[args.index("--cache-ram") + 1] == "8192"
    assert "--cache-idle-slots" in args
    assert args[args.index("--slot-prompt-similarity") + 1] == "0.10"
    assert "--no-kv-unified" in args
    assert args[args.index("--ctx-size") + 1] == "8192"


def test_a_benchmark_can_replace_the_cache_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "ensure_model", lambda model: Path("/models/chat.gguf"))
    args = chat_args(cache_flags=["--cache-ram", "0"])
    assert args[-2:] == ["--cache-ram", "0"]
    assert "--cache-idle-slots" not in args
