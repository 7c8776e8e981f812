"""Python source parsed one tree at a time, from any thread.

On Python 3.11 the conversion of a parse into an `ast` tree keeps its recursion depth where
every thread shares it: two parses at once (tool calls run in threads, service submits validate
tool sources in threads, the event loop checks answers) fail with "AST constructor recursion
depth mismatch". Every parse in DyTopo goes through `parse`.
"""

from __future__ import annotations

import ast
import threading
from typing import Literal, overload

_PARSING = threading.Lock()


@overload
def parse(source: str, filename: str = ..., mode: Literal["exec"] = ...) -> ast.Module: ...
@overload
def parse(source: str, filename: str = ..., *, mode: Literal["eval"]) -> ast.Expression: ...


def parse(source: str, filename: str = "<unknown>", mode: str = "exec") -> ast.AST:
    """`ast.parse`, serialised."""
    with _PARSING:
        return ast.parse(source, filename, mode)
