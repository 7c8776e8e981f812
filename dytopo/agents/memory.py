"""An agent's memory H_i: its own public messages and the private messages routed to it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class MemoryItem(BaseModel):
    """One entry of H_i."""

    round: int
    kind: Literal["own", "private"]
    source: str
    """Who wrote it (the agent itself for `own`)."""
    text: str
    score: float | None = None
    """Need/offer similarity of the edge that delivered it (private messages)."""

    def render(self) -> str:
        """The entry's line in a prompt: a function of the entry alone (never of the round
        being built), so it reads the same in every later prompt and the server's prompt cache
        can reuse it."""
        if self.kind == "own":
            return f"[round {self.round}] you reported: {self.text}"
        match = f", match {self.score:.2f}" if self.score is not None else ""
        return f"[round {self.round}] from {self.source}{match}: {self.text}"
