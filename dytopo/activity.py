"""What an agent is doing right now, for live views: waiting for a slot, generating, running tools.

The scheduler (and the manager's duties) set a hook for their task; the slot limiter and the tool
executor report to it. The notes reach the trace's observers only, never its file: there are
several per request and a finished run has no use for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

State = Literal["waiting", "generating", "tool", "done", "failed"]
Hook = Callable[[State, str], None]

_hook: ContextVar[Hook | None] = ContextVar("dytopo_activity", default=None)


def note(state: State, detail: str = "") -> None:
    """Tell the current task's live view what it is doing (nothing when none listens)."""
    hook = _hook.get()
    if hook is not None:
        hook(state, detail)


@contextmanager
def reporting(hook: Hook) -> Iterator[None]:
    """Send this task's notes (and its child tasks') to `hook` while the block runs."""
    token = _hook.set(hook)
    try:
        yield
    finally:
        _hook.reset(token)
