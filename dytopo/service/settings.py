"""How a service is configured: where it listens, who may call it, where its files live."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from dytopo.errors import ConfigError

EXTRA = "dytopo serve needs the serve extra: pip install 'dytopo[serve]'"


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or `localhost`); a name that DNS resolves is not:
    what it resolves to is not ours to decide."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServiceSettings(BaseModel):
    """Options of `dytopo serve` and `dytopo mcp`."""

    host: str = "127.0.0.1"
    """Address to bind. Anything but loopback needs a token."""
    port: int = Field(default=8765, ge=0, le=65535)
    token: str | None = None
    """Bearer token every request must carry (CLI --token or $DYTOPO_TOKEN)."""
    topologies_dir: Path = Path("topologies")
    """The only folder topology names resolve in (`research` -> topologies_dir/research.yaml)."""
    runs_dir: Path = Path("runs/service")
    """Each run's record (<id>.json), trace (<id>.jsonl) and checkpoint."""
    default_topology: str = "research"
    max_running: int = Field(default=1, ge=1, le=64)
    """Runs at once; they share one backend, whose slots bound the requests in flight."""
    max_queued: int = Field(default=16, ge=0, le=10_000)
    """Runs waiting for a turn; beyond this a submit is refused (HTTP 429)."""
    max_body_bytes: int = Field(default=262_144, ge=1024, le=64 * 1024 * 1024)
    max_agents: int = Field(default=16, ge=1, le=256)
    """Most agents of an inline topology: every agent may message every other, so a run's
    memory grows with the square of its agents."""
    max_rounds: int = Field(default=10, ge=1, le=50)
    """Most rounds a caller may ask for (max_rounds or min_rounds in overrides or inline)."""
    keep_runs: int = Field(default=500, ge=1, le=1_000_000)
    """Finished runs kept (record, trace, checkpoint); the oldest beyond this are deleted."""
    max_connections: int = Field(default=64, ge=1, le=10_000)
    """Open HTTP connections at most (event streams hold one each); requests beyond get 503,
    connections beyond twice this are closed at once, so the open-file limit is never met."""
    header_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    """A connection's request line and headers must arrive within this (idle ones close)."""
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """A request's whole body must arrive within this, else 408."""
    backend_url: str | None = None
    """LLM server root; None: $DYTOPO_BASE_URL, else the embedded stack (started once)."""
    embed_url: str | None = None
    model: str | None = None
    """The embedded stack's chat model (`dytopo.managed.models`); None: $DYTOPO_MODEL, else
    the default. Unused with a configured server."""

    @field_validator("token")
    @classmethod
    def _token(cls, token: str | None) -> str | None:
        if token is None:
            return None
        if not token or not token.isascii() or not token.isprintable() or " " in token:
            raise ValueError("the token must be printable ASCII without spaces")
        return token

    def check(self) -> None:
        """Refuse to serve beyond loopback without a token: anyone who reaches the port could
        run swarms on the operator's server."""
        if self.token is None and not is_loopback(self.host):
            raise ConfigError(
                f"--host {self.host} is reachable from other machines: set a token (--token or "
                "$DYTOPO_TOKEN), or bind to 127.0.0.1"
            )
