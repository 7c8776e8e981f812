"""The function in a model's final answer, as a HumanEval completion (the text after the prompt).

Answers come fenced (```python, ```py, bare ```), badly fenced (no closing fence, several
blocks, a fence in mid-line), unfenced, as the whole function (signature repeated) or as the
body only. Whichever it is, the result is text that, appended to the problem's prompt, defines
the entry point: a whole function follows the prompt (its definition replaces the prompt's), a
body is indented under the prompt's signature. Top-level statements other than imports,
definitions and assignments (example calls, prints, asserts, a `__main__` block) are dropped:
they are not part of the function and would run before the tests.

Answers in several blocks: the last block that defines the entry point is the function (models
fix it and show it again); the helpers it calls and the imports it uses that only another block
of the answer defines come with it, placed before it.

Extraction runs on model text in this process, so it is linear-ish in the answer's size: the
parsable prefix is found by jumping back to where the parse failed (over statement ends found
in one tokenizer pass), at most MAX_TRIES parses; a parser that gives up on hostile input
(MemoryError, RecursionError on deep nesting) reads as "does not parse"; and only the first
MAX_ANSWER_CHARS of an answer are read.

Code sent as one line of JSON escapes (`def f(x):\\n    return x`) is unescaped, but only when
that is what makes it code: a one-line answer whose string literal holds a `\\n` is kept as is.
"""

from __future__ import annotations

import ast
import bisect
import io
import re
import symtable
import textwrap
import tokenize
from typing import Literal

from pydantic import BaseModel

from dytopo.syntax import parse

Kind = Literal["function", "body", "code", "none"]

MAX_ANSWER_CHARS = 200_000
"""Answers are read up to here (HumanEval answers are a few KB)."""
MAX_TRIES = 64
"""Parses spent looking for the longest parsable prefix of one block."""
_GAVE_UP = (SyntaxError, ValueError, MemoryError, RecursionError)

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


_ESCAPE = re.compile(r"\\([nt\"\\])")
_UNESCAPED = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _normal(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _unescaped(text: str) -> str | None:
    """One line of code with JSON escapes for its newlines, unescaped in one pass (`\\\\n` in
    it is a string literal's backslash-n); None when `text` is not such a line."""
    if "\n" in text.strip() or "\\n" not in text:
        return None
    return _ESCAPE.sub(lambda m: _UNESCAPED[m[1]], text)


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
        return parse(code)
    except _GAVE_UP:
        return None


def _statement_ends(code: str) -> list[int]:
    """The line numbers (1-based, ascending) after which a prefix of `code` could parse: ends
    of logical lines outside brackets, found in one tokenizer pass up to where it fails."""
    ends, depth = [], 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth = max(depth - 1, 0)
            elif token.type in (tokenize.NEWLINE, tokenize.NL) and depth == 0:
                ends.append(token.start[0])
    except (tokenize.TokenError, *_GAVE_UP):
        pass
    return ends


def _parsable_prefix(code: str) -> str:
    """`code`, or its longest run of leading lines that parses (prose often follows code).

    Each failed parse sends the search back to the last statement end before the failing
    line (no prefix that holds that line parses), so few parses are needed."""
    lines = code.rstrip().split("\n")
    ends, end = _statement_ends(code), len(lines)
    for _ in range(MAX_TRIES):
        candidate = "\n".join(lines[:end])
        try:
            parse(candidate)
            return candidate
        except SyntaxError as exc:
            limit = min(end - 1, (exc.lineno or end) - 1)
        except _GAVE_UP:
            limit = end - 1
        end = ends[bisect.bisect_right(ends, limit) - 1] if limit > 0 and ends else 0
        if end <= 0 or end > limit:
            break
    return code


def _sanitized(code: str) -> str:
    """Only imports, definitions and assignments at top level, in their original text."""
    tree = _parses(code)
    if tree is None:
        return code
    lines = code.split("\n")
    return "\n".join(_source(lines, node) for node in tree.body if isinstance(node, _KEEP))


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


def _bound(node: ast.stmt) -> set[str]:
    """The names a top-level import, definition or assignment binds."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    if isinstance(node, (*_DEFINITIONS, ast.ClassDef)):
        return {node.name}
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return {n.id for t in targets if t is not None for n in ast.walk(t) if isinstance(n, ast.Name)}


def _globals_read(code: str) -> set[str]:
    """The global names `code` reads: at top level, and inside its functions and classes the
    names they neither bind nor take as arguments."""
    try:
        top = symtable.symtable(code, "<answer>", "exec")
    except _GAVE_UP:
        return set()
    names: set[str] = set()
    tables = [top]
    while tables:
        table = tables.pop()
        for symbol in table.get_symbols():
            if symbol.is_referenced() and (table is top or symbol.is_global()):
                names.add(symbol.get_name())
        tables.extend(table.get_children())
    return names


def _source(lines: list[str], node: ast.stmt) -> str:
    """The text of `node` (with its decorators) in the code split into `lines`."""
    start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    assert node.end_lineno is not None
    return "\n".join(lines[start - 1 : node.end_lineno])


def _with_helpers(code: str, others: list[str]) -> str:
    """`code` (the entry block, sanitized) after the imports, definitions and assignments of the
    `others` blocks that it reads and does not bind itself, and those they read in turn."""
    tree = _parses(code)
    if tree is None or not others:
        return code
    offered: dict[str, str] = {}  # a name -> the statement that binds it
    for block in others:
        other = _sanitized(_parsable_prefix(block.strip("\n")))
        parsed, other_lines = _parses(other), other.split("\n")
        for node in parsed.body if parsed is not None else []:
            for name in _bound(node):  # a later block's version of a helper wins
                offered[name] = _source(other_lines, node)
    own = {name for node in tree.body for name in _bound(node)}
    wanted, taken = sorted(_globals_read(code) - own), list[str]()
    while wanted:
        found = offered.get(wanted.pop())
        if found is not None and found not in taken:
            taken.append(found)
            wanted.extend(sorted(_globals_read(found) - own))
    order = {source: index for index, source in enumerate(dict.fromkeys(offered.values()))}
    return "\n".join([*sorted(taken, key=order.__getitem__), code])


def _extract(text: str, entry_point: str) -> Extraction:
    defines = _defines(entry_point)
    blocks = [textwrap.dedent(b) for b in fenced_blocks(text)]
    with_def = [k for k, b in enumerate(blocks) if defines.search(b)]
    if with_def:  # the last version: models fix the function and show it again
        last = with_def[-1]
        code = _sanitized(_parsable_prefix(blocks[last].strip("\n")))
        code = _with_helpers(code, blocks[:last] + blocks[last + 1 :])
        return Extraction(completion=f"\n{code}\n", kind="function")
    found = _from_prose(text, entry_point)
    if found is not None and found.strip():
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


_RANK: dict[Kind, int] = {"none": 0, "code": 1, "body": 2, "function": 3}


def _rank(found: Extraction) -> tuple[bool, int]:
    """Code that parses first, then the more complete kind."""
    code = textwrap.dedent(found.completion)
    parses = found.kind == "body" or (bool(code.strip()) and _parses(code) is not None)
    return parses, _RANK[found.kind]


def extract(answer: str, entry_point: str) -> Extraction:
    """The completion for `entry_point` found in `answer` (see the module docstring)."""
    text = _normal(answer[:MAX_ANSWER_CHARS])
    found = _extract(text, entry_point)
    unescaped = _unescaped(text)
    if unescaped is not None:  # the escaped reading wins only if it is better code
        other = _extract(unescaped, entry_point)
        if _rank(other) > _rank(found):
            return other
    return found
