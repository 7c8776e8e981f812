"""What a tool may touch: set per run from the topology's `tool_settings:` section."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ToolContext(BaseModel):
    """Limits and locations handed to every tool that declares a `ctx: ToolContext` parameter.

    Built-in tools are safe by construction only within these settings: keep them narrow.
    """

    model_config = ConfigDict(extra="forbid")

    workspace: Path = Field(default_factory=Path.cwd)
    """read_file / list_files never leave this folder."""
    docs_dir: Path | None = None
    """search_docs searches this folder (default: the workspace)."""
    http_allow: list[str] = Field(default_factory=list)
    """http_get only fetches from these host names (exact match, or `*.example.org`), on ports
    80 and 443 unless an entry names its port (`example.org:8080`), and only from public
    internet addresses."""
    timeout_s: float = Field(default=20.0, gt=0)
    """Per-call time limit (a tool may set a tighter one of its own)."""
    max_result_chars: int = Field(default=4000, ge=100)
    """Tool results are truncated to this before they enter a prompt."""
    max_bytes: int = Field(default=1_000_000, ge=1024)
    """Largest file or HTTP body a tool reads."""
    python_memory_mb: int = Field(default=256, ge=32)
    """run_python's address-space limit (per process of its sandbox)."""
    python_scratch_mb: int = Field(default=64, ge=1)
    """Size of run_python's scratch folder (a tmpfs, its only writable place)."""
    python_read_only: list[Path] = Field(default_factory=list)
    """Folders run_python may read, mounted read-only at the same absolute path inside its
    sandbox (relative paths are taken from the workspace). Nothing else of the host is visible."""
