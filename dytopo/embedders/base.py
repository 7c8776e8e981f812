"""The sentence-encoder interface the router uses."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence


class Embedder(ABC):
    """Maps texts to L2-normalised vectors, one batch per call."""

    name: str = "embedder"

    @abstractmethod
    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed every text; the result is in input order and L2-normalised."""

    async def aclose(self) -> None:
        """Release connections; safe to call twice."""
        return


def normalise(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else [0.0 for _ in vector]
