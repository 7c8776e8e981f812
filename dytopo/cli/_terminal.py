"""Printing text that came from a model, a task file, a trace or a tool on a terminal, safely.

Why: a model's answer (or a batch id, a tool's output) may hold terminal escape codes: OSC 52
writes the clipboard, ESC [2J clears the screen, OSC 0 sets the window title. rich passes ESC
and the C1 controls straight through. Here every C0 control except newline and tab, DEL and
every C1 control is shown as its Python escape (`\\x1b`), so the text is read, never obeyed.

`SafeConsole` does it for whatever a console prints (strings, tables, live views): rich's own
styling and cursor moves come from styles and control segments, which it leaves alone. Plain
`print` of JSON goes through `json_text`: JSON already escapes C0, and C1 and DEL are escaped
there too (still the same JSON value).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.segment import Segment

__all__ = ["SafeConsole", "json_text", "visible"]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_JSON_CONTROL = re.compile(r"[\x7f-\x9f]")


def _escaped(match: re.Match[str]) -> str:
    return f"\\x{ord(match[0]):02x}"


def visible(text: str) -> str:
    """`text` with its control characters (all but newline and tab) shown as `\\xNN`."""
    return _CONTROL.sub(_escaped, text)


def json_text(value: Any, **options: Any) -> str:
    """`json.dumps(value, ensure_ascii=False, **options)` with DEL and C1 as \\u escapes."""
    text = json.dumps(value, ensure_ascii=False, **options)
    return _JSON_CONTROL.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


class SafeConsole(Console):
    """A rich Console whose text never carries a control character to the terminal."""

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(
            segment
            if segment.control or not _CONTROL.search(segment.text)
            else Segment(visible(segment.text), segment.style, segment.control)
            for segment in buffer
        )
