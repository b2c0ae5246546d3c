"""umT5-XXL text encoder: Wan's ``models_t5_umt5-xxl-enc-bf16.pth`` or a diffusers ``text_encoder/`` folder.

Wan's encoder (``wan/modules/t5.py``, ``T5Encoder`` with ``shared_pos=False``) and transformers'
``UMT5EncoderModel`` compute the same function: RMS layer norm (eps 1e-6, no mean subtraction), unscaled dot-product
attention with a per-layer bidirectional relative position bias (32 buckets, max distance 128), gated GELU-tanh
feed-forward (``gelu_new``), final RMS norm. Only names differ (see :mod:`.mappings`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

from fantasytalking.errors import WeightsError

from .files import as_state_dict, config_model_type, load_torch_file, read_sidecar_config
from .hf import checked_from_pretrained, quiet_transformers
from .keys import assign_state_dict, check_no_meta, check_state_dict, expected_shapes
from .mappings import t5_hf_key_to_wan, t5_wan_key_to_hf
from .wan import WAN_T5_FILE, WAN_TOKENIZER_DIR

__all__ = ["infer_umt5_config", "load_text_encoder", "load_tokenizer"]

_HINT = f"Re-download {WAN_T5_FILE} from Wan-AI/Wan2.1-I2V-14B-720P."


def _shape(state: Mapping[str, torch.Tensor], key: str, file: Path) -> tuple[int, ...]:
    if key not in state:
        raise WeightsError(f"umT5 weights in {file} lack {key}, needed to size the model: {_HINT}")
    return tuple(state[key].shape)


def infer_umt5_config(state: Mapping[str, torch.Tensor], file: Path) -> UMT5Config:
    """``UMT5Config`` from Wan umT5 encoder shapes (+ the optional sidecar ``<file>.config.json``).

    vocab and d_model from ``token_embedding.weight`` [vocab, d]; heads and buckets from the per-layer
    ``blocks.0.pos_embedding.embedding.weight`` [buckets, heads]; d_kv from ``blocks.0.attn.q.weight``
    [heads * d_kv, d]; d_ff from ``blocks.0.ffn.fc1.weight`` [d_ff, d]; layers by counting ``blocks.N``.
    """
    vocab, d_model = _shape(state, "token_embedding.weight", file)
    buckets, heads = _shape(state, "blocks.0.pos_embedding.embedding.weight", file)
    inner = _shape(state, "blocks.0.attn.q.weight", file)[0]
    d_ff = _shape(state, "blocks.0.ffn.fc1.weight", file)[0]
    layers = 1 + max(int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    fields: dict[str, Any] = {
        "vocab_size": vocab,
        "d_model": d_model,
        "d_kv": inner // heads,
        "d_ff": d_ff,
        "num_layers": layers,
        "num_decoder_layers": layers,
        "num_heads": heads,
        "relative_attention_num_buckets": buckets,
        "relative_attention_max_distance": 128,
        "feed_forward_proj": "gated-gelu",  # -> gelu_new (the tanh approximation Wan's GELU uses), gated
        "layer_norm_epsilon": 1e-6,
        "dropout_rate": 0.1,
        "tie_word_embeddings": False,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
    }
    fields.update(read_sidecar_config(file))
    return UMT5Config(**fields)


def _tied_aliases(model: torch.nn.Module) -> set[str]:
    """State-dict keys that are tied copies of another key (filled by ``tie_weights``)."""
    tied = getattr(model, "_tied_weights_keys", None)
    return set(tied) if isinstance(tied, Mapping) else {"encoder.embed_tokens.weight"}


def load_tokenizer(folder: str | Path) -> Any:
    """``AutoTokenizer.from_pretrained(folder, local_files_only=True)`` with a WeightsError naming the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(
            f"tokenizer folder {folder} does not exist: download google/umt5-xxl's tokenizer files "
            f"(from Wan-AI/Wan2.1-I2V-14B-720P/{WAN_TOKENIZER_DIR}) into it."
        )
    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:
        reason = " ".join(str(err).split())[:300]
        raise WeightsError(f"cannot load the tokenizer in {folder} ({reason}): re-download the folder.") from None


def load_text_encoder(
    path: str | Path,
    *,
    dtype: torch.dtype,
    device: str | torch.device = "cpu",
    tokenizer_path: str | Path | None = None,
) -> tuple[UMT5EncoderModel, Any]:
    """Load the umT5 encoder and its tokenizer.

    ``path`` is a Wan folder (original: ``models_t5_umt5-xxl-enc-bf16.pth`` + ``google/umt5-xxl/``; diffusers:
    ``text_encoder/`` + ``tokenizer/``), the ``.pth`` itself, or a ``text_encoder/`` folder.
    ``tokenizer_path`` overrides where the tokenizer is read from.
    """
    path = Path(path)
    if path.is_dir() and (path / "text_encoder").is_dir():
        model = _load_hf_text_encoder(path / "text_encoder", dtype=dtype)
        tokenizer = load_tokenizer(tokenizer_path or path / "tokenizer")
        return model.to(device), tokenizer
    if path.is_dir() and config_model_type(path) == "umt5":
        model = _load_hf_text_encoder(path, dtype=dtype)
        return model.to(device), load_tokenizer(tokenizer_path or path.parent / "tokenizer")

    file = path if path.is_file() else path / WAN_T5_FILE
    model = _load_wan_t5(file, dtype=dtype, device=device)
    return model, load_tokenizer(tokenizer_path or file.parent / WAN_TOKENIZER_DIR)


def _load_hf_text_encoder(folder: Path, *, dtype: torch.dtype) -> UMT5EncoderModel:
    return checked_from_pretrained(
        UMT5EncoderModel, folder, dtype=dtype, what="umT5 text encoder",
        hint="Re-download the text_encoder folder of Wan-AI/Wan2.1-I2V-14B-720P-Diffusers.",
    )  # fmt: skip


def _load_wan_t5(file: Path, *, dtype: torch.dtype, device: str | torch.device) -> UMT5EncoderModel:
    state = as_state_dict(load_torch_file(file), file)
    config = infer_umt5_config(state, file)
    with init_empty_weights():
        model = UMT5EncoderModel(config)
    aliases = _tied_aliases(model)
    expected = {k: s for k, s in expected_shapes(model).items() if k not in aliases}

    hf: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    got: dict[str, tuple[int, ...]] = {}
    for key, value in state.items():
        name = t5_wan_key_to_hf(key)
        if name is None:
            got[key] = tuple(value.shape)  # reported as unexpected under its own name
        else:
            hf[name], source[name], got[name] = value, key, tuple(value.shape)

    def rename(key: str) -> str:
        return source.get(key) or t5_hf_key_to_wan(key) or key

    what = f"umT5 weights in {file}"
    check_state_dict(expected, got, what=what, hint=_HINT, rename=rename)
    keep = model._keep_in_fp32_modules if dtype == torch.float16 else None  # transformers' rule: "wo" in fp16
    assign_state_dict(model, hf, what=what, hint=_HINT, dtype=dtype, device=device, keep_in_fp32=list(keep or []),
                      rename=rename, expected=expected)  # fmt: skip
    del state, hf
    model.tie_weights()  # encoder.embed_tokens.weight <- shared.weight
    check_no_meta(model, what=what, hint=_HINT, rename=rename)
    return model.to(device).eval()
