"""Embeddings from llama-server --embeddings or any OpenAI-compatible /v1/embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from dytopo.backends.http import HttpTransport, build_client
from dytopo.backends.settings import BackendSettings
from dytopo.embedders.base import Embedder, Embeddings, normalise_rows
from dytopo.errors import BackendError

# Sentence encoders have small windows (MiniLM: 512 tokens, and llama-server answers HTTP 500
# beyond its batch size). Descriptors are one sentence; 500 characters never exceed 512 tokens.
MAX_INPUT_CHARS = 500


class HttpEmbedder(Embedder):
    """POSTs one batch per call to `{base_url}/v1/embeddings`; inputs are cut to 500 chars."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        settings: BackendSettings | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        settings = settings or BackendSettings(base_url=base_url, read_timeout_s=60.0)
        self.model = model
        self.name = f"http:{base_url}"
        self._own_client = client is None
        self.http = HttpTransport(base_url, settings, client or build_client(settings))

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        if not texts:
            return normalise_rows([])
        body: dict[str, object] = {"input": [t[:MAX_INPUT_CHARS] for t in texts]}
        if self.model:
            body["model"] = self.model
        response, _ = await self.http.send("POST", "/v1/embeddings", json=body)
        self.http.raise_for_status(response, "/v1/embeddings")
        data = sorted(response.json()["data"], key=lambda d: d["index"])
        if len(data) != len(texts):
            raise BackendError(
                f"{self.http.url('/v1/embeddings')} returned {len(data)} vectors for "
                f"{len(texts)} texts (is the server started with --embeddings?)",
                url=self.http.url("/v1/embeddings"),
            )
        try:
            return normalise_rows([d["embedding"] for d in data])
        except (ValueError, TypeError) as exc:
            raise BackendError(
                f"{self.http.url('/v1/embeddings')} returned vectors that are not flat lists "
                f"of numbers of one length ({exc}); use a pooled sentence-embedding model",
                url=self.http.url("/v1/embeddings"),
            ) from exc

    async def aclose(self) -> None:
        if self._own_client:
            await self.http.client.aclose()
