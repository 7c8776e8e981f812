"""A tool module: every top-level function decorated with @tool becomes a tool agents may call.

Try it without a model:
    dytopo tools call word_count -m tools/word_count.py --args '{"text": "one two three"}'
Give it to an agent: see README.md, "Your own tool".
"""

from __future__ import annotations

from dytopo.errors import ToolError
from dytopo.tools import tool

MAX_CHARS = 100_000


@tool
def word_count(text: str, unique: bool = False) -> str:
    """Count the words of a text.

    Args:
        text: the text to count.
        unique: count each distinct word (case-insensitive) once.
    """
    # The model reads a ToolError's message and may try again: say what to change.
    if len(text) > MAX_CHARS:
        raise ToolError(f"the text has {len(text):,} characters; pass at most {MAX_CHARS:,}")
    words = text.split()
    if unique:
        words = list({w.casefold() for w in words})
    return str(len(words))
