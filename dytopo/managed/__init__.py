"""The embedded default: a real llama-server with small models from PyPI, started on demand."""

from dytopo.managed.models import EmbeddedModel, embedded_model, ensure_model
from dytopo.managed.server import LlamaServerProcess, ManagedStack

__all__ = ["EmbeddedModel", "LlamaServerProcess", "ManagedStack", "embedded_model", "ensure_model"]
