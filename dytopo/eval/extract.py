"""The function in a model's final answer, as a HumanEval completion (the text after the prompt).

Answers come fenced (```python, ```py, bare ```), badly fenced (no closing fence, several
blocks, a fence in mid-line), unfenced, as the whole function (signature repeated) or as the
body only. Whichever it is, the result is text that, appended to the problem's prompt, defines
the entry point: a whole function follows the prompt (its definition replaces the prompt's), a
body is indented under the prompt's signature. Top-level statements other than imports,
definitions and assignments (example calls, prints, asserts, a `__main__` block) are dropped:
they are not part of the function and would run before the tests.
"""

from __future__ import annotations

import ast
import re
import textwrap
from typing import Literal

from pydantic import BaseModel

Kind = Literal["function", "body", "code", "none"]

_LANGUAGE = re.compile(r"^[A-Za-z0-9_+#.-]*$")
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_KEEP = (
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Assign,
    ast.AnnAssign,
)
_CODE_START = re.compile(r"^(from\s+\S+\s+import\s|import\s|@|def\s|async\s+def\s|class\s)")


class Extraction(BaseModel):
    """What was found in an answer."""

    completion: str
    """Text to append to the prompt; empty when no code was found."""
    kind: Kind
    """function: defines the entry point; body: the entry point's body only; code: some other
    code (graded as is, it will fail); none: no code at all."""


def _defines(entry_point: str, *, anywhere: bool = False) -> re.Pattern[str]:
    """`def entry_point(` at a line's start, or (`anywhere`) after prose on the same line."""
    start = r"\b" if anywhere else r"^[ \t]*"
    return re.compile(rf"{start}(?:async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\(", re.M)


def _normal(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\n" not in text.strip() and "\\n" in text:  # code sent as one line of JSON escapes
        text = text.replace("\\n", "\n").replace("\\t", "\t").replace('\\"', '"')
    return text


def fenced_blocks(answer: str) -> list[str]:
    """The contents of the ``` blocks in `answer`, language tags removed; an unclosed last
    block runs to the end. Empty when there is no fence."""
    parts = answer.split("```")
    blocks = []
    for inside in parts[1::2]:
        first, newline, rest = inside.partition("\n")
        if newline and _LANGUAGE.match(first.strip()):
            inside = rest  # ```python / ```py / ``` / ```Python3
        if inside.strip():
            blocks.append(inside)
    return blocks


def _parses(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError):
        return None


def _parsable_prefix(code: str) -> str:
    """`code`, or its longest run of leading lines that parses (prose often follows code)."""
    lines = code.rstrip().split("\n")
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        if _parses(candidate) is not None:
            return candidate
    return code


def _sanitized(code: str) -> str:
    """Only imports, definitions and assignments at top level, in their original text."""
    tree = _parses(code)
    if tree is None:
        return code
    kept = [node for node in tree.body if isinstance(node, _KEEP)]
    lines = code.split("\n")
    pieces = []
    for node in kept:
        start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        assert node.end_lineno is not None
        pieces.append("\n".join(lines[start - 1 : node.end_lineno]))
    return "\n".join(pieces)


def _from_prose(text: str, entry_point: str) -> str | None:
    """The function in unfenced text: from its `def` (with the imports just above) to where the
    code stops parsing."""
    match = _defines(entry_point, anywhere=True).search(text)
    if match is None:
        return None
    lines = text[: match.start()].split("\n")[:-1]
    start = len(lines)
    while start > 0 and (_CODE_START.match(lines[start - 1].strip()) or not lines[start - 1]):
        start -= 1
    head = "\n".join(lines[start:])
    return _parsable_prefix(textwrap.dedent(head + "\n" + text[match.start() :]))


def _as_body(code: str) -> str | None:
    """`code` indented as a function body, if it is one (it parses there and returns)."""
    body = textwrap.indent(textwrap.dedent(code).strip("\n"), "    ")
    tree = _parses(f"def _f():\n{body}\n")
    if tree is None:
        return None
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    own = [s for s in function.body if not isinstance(s, (*_DEFINITIONS, ast.ClassDef))]
    if not any(isinstance(n, ast.Return) for s in own for n in ast.walk(s)):
        return None  # e.g. a function under another name: not a body
    return body + "\n"


def extract(answer: str, entry_point: str) -> Extraction:
    """The completion for `entry_point` found in `answer` (see the module docstring)."""
    text = _normal(answer)
    defines = _defines(entry_point)
    blocks = [textwrap.dedent(b) for b in fenced_blocks(text)]
    with_def = [b for b in blocks if defines.search(b)]
    if with_def:  # the last version: models fix the function and show it again
        code = _sanitized(_parsable_prefix(with_def[-1].strip("\n")))
        return Extraction(completion=f"\n{code}\n", kind="function")
    found = _from_prose(text, entry_point)
    if found is not None:
        return Extraction(completion=f"\n{_sanitized(found)}\n", kind="function")
    for candidate in [*reversed(blocks), text]:
        body = _as_body(candidate)
        if body is not None:
            return Extraction(completion=body, kind="body")
    for block in reversed(blocks):
        tree = _parses(textwrap.dedent(block))
        if tree is not None and any(isinstance(n, _KEEP) for n in tree.body):
            return Extraction(completion=f"\n{_sanitized(block)}\n", kind="code")
    return Extraction(completion="", kind="none")
