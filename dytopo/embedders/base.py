"""The sentence-encoder interface the router uses."""

from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float64]


class Embeddings(list[list[float]]):
    """A batch of vectors as `embed` promises them (a list of rows), carrying the same rows as
    one read-only float64 array, `array`, of shape (rows, dim).

    The router reads `array` instead of converting n * dim Python floats again (512 vectors of
    384 floats: ~7 ms). It is a snapshot: editing the lists afterwards does not change it.
    """

    array: FloatArray

    def __init__(self, array: FloatArray) -> None:
        super().__init__(array.tolist())
        array.flags.writeable = False
        self.array = array


class Embedder(ABC):
    """Maps texts to L2-normalised vectors, one batch per call."""

    name: str = "embedder"

    @abstractmethod
    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed every text; the result is in input order and L2-normalised. Return
        `Embeddings` when the vectors are an array already: routing then skips a conversion."""

    async def aclose(self) -> None:
        """Release connections; safe to call twice."""
        return


def normalise(vector: Sequence[float]) -> list[float]:
    # The same sum and divisions as a plain loop, bit for bit, in C loops (map, not a genexpr).
    norm = math.sqrt(sum(map(operator.mul, vector, vector)))
    return list(map(norm.__rtruediv__, vector)) if norm > 0 else [0.0] * len(vector)


def normalise_rows(rows: Sequence[Sequence[float]], dim: int = 0) -> Embeddings:
    """`normalise` of every row, bit for bit; `dim` is the width of an empty batch.

    Raises ValueError unless the rows are flat vectors of one length.
    """
    vectors = np.asarray(rows, dtype=np.float64) if len(rows) else np.zeros((0, dim))
    if vectors.ndim != 2:
        raise ValueError(f"expected vectors of one length, got an array of shape {vectors.shape}")
    # cumsum adds left to right as `sum` does (np.sum adds pairwise: other last bits); sqrt and
    # division are correctly rounded in both.
    norm = np.sqrt(np.cumsum(vectors * vectors, axis=1)[:, -1:])
    unit = np.divide(vectors, norm, out=np.zeros_like(vectors), where=norm > 0)
    return Embeddings(unit)
