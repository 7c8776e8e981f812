"""The line between graded code and its tests: plain values over two pipes, one JSON line each.

Runs INSIDE the sandboxes (dytopo/eval/grade.py puts this file's text into both programs), so it
uses the standard library only and imports nothing from dytopo.

Why: when the answer and the tests share a process, the answer owns the verdict: it can print
the pass marker and `os._exit(0)`, or return an object whose `__eq__` is always True. So the
answer runs in one sandbox (`serve`) and the problem's tests in another (`Candidate` stands in
for the function there). All the tests ever get from the answer are values rebuilt by `decode`
from JSON: None, bool, int, float, complex, str, bytes, and lists, tuples, sets, frozensets and
dicts of them. Whatever the answer does to its own process, it can only choose those values.
"""

from __future__ import annotations

import json
import linecache
import os
import sys
from typing import Any

MAX_LINE = 4 * 1024 * 1024
"""Bytes in one request or reply line; a longer reply is the answer's failure."""
MAX_DEPTH = 100
"""Nesting of containers in one value."""
_SCALARS = (type(None), bool, int, float, str)
_TAGGED = {"tuple": tuple, "set": set, "frozenset": frozenset}
PLAIN = (
    "None, bool, int, float, complex, str, bytes, or a list, tuple, set, frozenset or dict of them"
)


class NotPlain(TypeError):
    """A value the tests could not trust: not built from plain types only."""


class CandidateGone(BaseException):
    """The graded code stopped answering (it ended, failed or sent a bad reply). A
    BaseException, so that a test's own `except Exception` does not hide it."""


def encode(value: object, depth: int = 0) -> object:
    """`value` as JSON data, built from its exact types (a subclass of int is not an int)."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if depth >= MAX_DEPTH:
        raise NotPlain(f"nested more than {MAX_DEPTH} levels deep")
    if kind is list:
        return [encode(item, depth + 1) for item in value]  # type: ignore[attr-defined]
    if kind in (tuple, set, frozenset):
        items = [encode(item, depth + 1) for item in value]  # type: ignore[attr-defined]
        return {"t": kind.__name__, "v": items}
    if kind is dict:
        pairs = value.items()  # type: ignore[attr-defined]
        return {"t": "dict", "v": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in pairs]}
    if kind is bytes:
        return {"t": "bytes", "v": value.hex()}  # type: ignore[attr-defined]
    if kind is complex:
        return {"t": "complex", "v": [value.real, value.imag]}  # type: ignore[attr-defined]
    raise NotPlain(f"a {kind.__module__}.{kind.__qualname__} is not a plain value ({PLAIN})")


def decode(data: object, depth: int = 0) -> object:
    """The value `encode` made `data` from; NotPlain for anything else."""
    if type(data) in _SCALARS:
        return data
    if depth >= MAX_DEPTH:
        raise NotPlain(f"nested more than {MAX_DEPTH} levels deep")
    if type(data) is list:
        return [decode(item, depth + 1) for item in data]
    if type(data) is not dict or set(data) != {"t", "v"}:
        raise NotPlain(f"not an encoded value: {str(data)[:80]}")
    tag, items = data["t"], data["v"]
    if tag in _TAGGED and type(items) is list:
        return _TAGGED[tag](decode(item, depth + 1) for item in items)
    if tag == "dict" and type(items) is list:
        pairs: list[Any] = [decode(pair, depth + 1) for pair in items]
        if not all(type(pair) is list and len(pair) == 2 for pair in pairs):
            raise NotPlain("a dict that is not a list of pairs")
        return dict(pairs)
    if tag == "bytes" and type(items) is str:
        return bytes.fromhex(items)
    if tag == "complex" and type(items) is list and all(type(x) is float for x in items):
        return complex(*items)
    raise NotPlain(f"not an encoded value: {str(data)[:80]}")


def _line(value: object) -> bytes:
    return json.dumps(encode(value), separators=(",", ":")).encode() + b"\n"


def _read(reader: Any) -> object:
    """The next value on `reader`; EOFError at the end, NotPlain for a bad line."""
    line = reader.readline(MAX_LINE + 1)
    if not line:
        raise EOFError
    if len(line) > MAX_LINE or not line.endswith(b"\n"):
        raise NotPlain(f"a line of more than {MAX_LINE} bytes")
    return decode(json.loads(line))


class Candidate:
    """The tests' side: calling it asks the graded code and returns its (plain) answer."""

    def __init__(self, requests_fd: int, replies_fd: int) -> None:
        self._requests = os.fdopen(requests_fd, "wb")
        self._replies = os.fdopen(replies_fd, "rb")
        self.gone: str | None = None
        """Why the graded code stopped answering, once it did."""

    def __call__(self, *args: object, **kwargs: object) -> object:
        if self.gone is not None:
            raise CandidateGone(self.gone)
        try:
            self._requests.write(_line([list(args), kwargs]))
            self._requests.flush()
            return _read(self._replies)
        except (OSError, EOFError):
            self.gone = "the graded code ended before it answered"
        except (NotPlain, ValueError, RecursionError, MemoryError) as exc:
            self.gone = f"the graded code sent a bad reply: {exc}"
        raise CandidateGone(self.gone)


def serve(source: str, entry_point: str, requests_fd: int, replies_fd: int) -> None:
    """The graded code's side: define `source`, then answer each request with a call to
    `entry_point` until the tests close their end. An exception leaves to the sandbox's
    runner, which prints it and exits with status 1."""
    exit_now = os._exit  # taken before the answer runs: it may replace os._exit
    requests, replies = os.fdopen(requests_fd, "rb"), os.fdopen(replies_fd, "wb")
    linecache.cache["<answer>"] = (len(source), None, source.splitlines(True), "<answer>")
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(compile(source, "<answer>", "exec", dont_inherit=True), namespace)
    function = namespace.get(entry_point)
    if not callable(function):
        raise NameError(f"the answer defines no function {entry_point}")
    while True:
        try:
            request: Any = _read(requests)
        except EOFError:
            break
        args, kwargs = request
        value = function(*args, **kwargs)
        try:
            replies.write(_line(value))
        except (NotPlain, ValueError, RecursionError) as exc:
            raise NotPlain(f"what {entry_point} returned: {exc}") from None
        replies.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    exit_now(0)
