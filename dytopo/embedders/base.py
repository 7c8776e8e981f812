"""The sentence-encoder interface the router uses."""

from __future__ import annotations

import math
import operator
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
    # The same sum and divisions as a plain loop, bit for bit, in C loops (map, not a genexpr).
    norm = math.sqrt(sum(map(operator.mul, vector, vector)))
    return list(map(norm.__rtruediv__, vector)) if norm > 0 else [0.0] * len(vector)
