"""The embedded default: a real llama-server with small models from PyPI, started on demand."""

from dytopo.managed.server import LlamaServerProcess, ManagedStack

__all__ = ["LlamaServerProcess", "ManagedStack"]
