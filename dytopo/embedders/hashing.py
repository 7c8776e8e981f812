"""A deterministic, dependency-free embedder for tests and offline dry runs."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from dytopo.embedders.base import Embedder, Embeddings, normalise_rows

_WORD = re.compile(r"[a-z0-9]+")


class HashEmbedder(Embedder):
    """Bag of hashed words: texts sharing words get a positive cosine, others about zero."""

    name = "hash"

    def __init__(self, dim: int = 256) -> None:
        if dim < 8:
            raise ValueError(f"dim must be >= 8, got {dim}")
        self.dim = dim

    def _counts(self, text: str) -> list[float]:
        vector = [0.0] * self.dim
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "little") % self.dim
            vector[index] += 1.0 if digest[4] & 1 else -1.0
        return vector

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        return normalise_rows([self._counts(t) for t in texts], self.dim)
