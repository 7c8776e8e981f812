"""Connection settings of an OpenAI-compatible server (the topology's `backend:` section)."""

from __future__ import annotations

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

EXAMPLE_URL = "http://127.0.0.1:8080"


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a server root, with the fix; None when it can.

    Checked before any request: a URL that cannot work never heals, so it must not be retried.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return f"{url!r} is not a valid URL; give a server root like {EXAMPLE_URL}"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return f"{url!r} is not an http(s) URL with a host; give a server root like {EXAMPLE_URL}"
    if parsed.query or parsed.fragment:
        return f"{url!r} has a query or fragment; give just the server root like {EXAMPLE_URL}"
    return None


def check_url(url: str | None) -> str | None:
    """`url` unchanged when valid (or None); ValueError naming the fix otherwise."""
    problem = None if url is None else url_problem(url)
    if problem:
        raise ValueError(problem)
    return url


class BackendSettings(BaseModel):
    """How to reach and treat the LLM server."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    base_url: str | None = None
    """Server root, e.g. http://127.0.0.1:8008. None: $DYTOPO_BASE_URL, else the embedded server."""
    api_key: str | None = None
    """Bearer token, if the server wants one (llama-server --api-key)."""
    model: str | None = None
    """Model name to send; needed by router-mode and non-llama.cpp servers. With no server
    configured, the embedded chat model to start (`dytopo doctor` names it; the CLI's --model
    wins)."""
    slots: int | None = Field(default=None, ge=1, le=1024)
    """Concurrent requests to allow. None: the server's slot count from /props."""
    n_ctx_per_slot: int | None = Field(default=None, ge=256, le=100_000_000)
    """Context per request. None: from /props; required for servers without /props."""
    kv_unified: bool | None = None
    """How the server keeps its KV cache. True: one pool shared by all slots (llama-server's
    default unless started with --no-kv-unified); False: each slot its own context. None: not
    known (llama-server does not report it); DyTopo's own servers are per slot, any other is
    planned as shared, the layout in which concurrent requests can never overflow."""
    connect_timeout_s: float = Field(default=5.0, gt=0, le=3600)
    read_timeout_s: float = Field(default=600.0, gt=0, le=86_400)
    """Time to wait for a whole reply; CPU generation of long answers is slow."""
    max_attempts: int = Field(default=6, ge=1, le=20)
    """HTTP attempts per request before giving up (connection errors, 429/502/503/504, timeouts)."""
    backoff_initial_s: float = Field(default=0.5, gt=0, le=600)
    backoff_max_s: float = Field(default=8.0, gt=0, le=3600)

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        return check_url(url)
