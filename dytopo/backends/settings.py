"""Connection settings of an OpenAI-compatible server (the topology's `backend:` section)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BackendSettings(BaseModel):
    """How to reach and treat the LLM server."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None
    """Server root, e.g. http://127.0.0.1:8008. None: $DYTOPO_BASE_URL, else the embedded server."""
    api_key: str | None = None
    """Bearer token, if the server wants one (llama-server --api-key)."""
    model: str | None = None
    """Model name to send; needed by router-mode and non-llama.cpp servers."""
    slots: int | None = Field(default=None, ge=1)
    """Concurrent requests to allow. None: the server's slot count from /props."""
    n_ctx_per_slot: int | None = Field(default=None, ge=256)
    """Context per request. None: from /props; required for servers without /props."""
    kv_unified: bool = False
    """True when the server runs with --kv-unified: its context is then one pool shared by all
    slots, so DyTopo plans each request for n_ctx / slots."""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=600.0, gt=0)
    """Time to wait for a whole reply; CPU generation of long answers is slow."""
    max_attempts: int = Field(default=6, ge=1)
    """HTTP attempts per request before giving up (connection errors, 429/502/503/504, timeouts)."""
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=8.0, gt=0)
