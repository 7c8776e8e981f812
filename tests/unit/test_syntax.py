from __future__ import annotations

import gc
import sys
import threading
import time

import pytest

from dytopo.syntax import parse


class _Cycle:
    """Garbage whose collection runs Python code (a thread switch) in the middle of a parse."""

    other: _Cycle | None = None

    def __del__(self) -> None:
        time.sleep(0)


@pytest.mark.parametrize("mode", ["exec", "eval"])
def test_parses_from_several_threads_at_once_all_succeed(mode: str) -> None:
    # The calculator (tool calls run in threads), the answer's check and the eval's extraction
    # parse while other threads do: on Python 3.11 that failed with "AST constructor recursion
    # depth mismatch" unless every parse goes through dytopo.syntax.parse.
    if mode == "exec":
        source = "".join(
            f"def f{i}(x):\n    return [x + {i} for _ in range(3)][0]\n" for i in range(40)
        )
    else:
        source = " + ".join(f"[{i} for _ in range(2)][0]" for i in range(40))
    errors: list[BaseException] = []

    def work() -> None:
        for _ in range(25):
            a, b = _Cycle(), _Cycle()
            a.other, b.other = b, a
            try:
                parse(source, mode=mode)  # type: ignore[call-overload]
            except Exception as exc:
                errors.append(exc)
                return

    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(1e-6)
    gc.set_threshold(50)
    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)
    assert not errors, errors[0]


def test_the_check_the_extraction_and_tool_validation_share_the_one_parser() -> None:
    import importlib

    for name in ("agents.answer", "swarm.check", "eval.extract", "tools.static"):
        assert importlib.import_module(f"dytopo.{name}").parse is parse
