"""Key mappings between Wan2.1's original checkpoints and the diffusers / transformers models.

Directions:

* DiT and VAE, original -> diffusers: diffusers' own converters (``convert_wan_transformer_to_diffusers``,
  ``convert_wan_vae_to_diffusers``); they are per-key renames, so :func:`wan_dit_key_to_diffusers` /
  :func:`wan_vae_key_to_diffusers` apply them to one key at a time (for messages and header-only checks).
* DiT and VAE, diffusers -> original (:func:`diffusers_dit_key_to_wan`, :func:`diffusers_vae_key_to_wan`):
  written here, used to write tiny original-layout checkpoints and to name missing keys in messages. Tests check
  that inverse followed by diffusers' forward converter is the identity, which ties them to the trusted converter.
* umT5 encoder, Wan ``T5Encoder`` <-> ``transformers.UMT5EncoderModel``: written here from Wan's ``wan/modules/t5.py``.
* CLIP vision tower, Wan ``XLMRobertaCLIP.visual`` <-> ``transformers.CLIPVisionModel``: written here from Wan's
  ``wan/modules/clip.py``; the fused ``to_qkv`` is split into ``q/k/v_proj`` (q rows first, then k, then v).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from diffusers.loaders.single_file_utils import (
    convert_wan_transformer_to_diffusers,
    convert_wan_vae_to_diffusers,
)

__all__ = [
    "CLIP_UNUSED_PREFIXES",
    "clip_hf_to_wan",
    "clip_wan_key_for_hf",
    "clip_wan_to_hf",
    "diffusers_dit_key_to_wan",
    "diffusers_vae_key_to_wan",
    "t5_hf_key_to_wan",
    "t5_wan_key_to_hf",
    "wan_dit_key_to_diffusers",
    "wan_vae_key_to_diffusers",
]

# A placeholder value for running diffusers' converters on names only (they never look at these values).
_PLACEHOLDER = torch.empty(0, device="meta")


def _apply(rules: list[tuple[re.Pattern[str], str]], key: str) -> str:
    for pattern, repl in rules:
        key = pattern.sub(repl, key)
    return key


def _compile(rules: list[tuple[str, str]]) -> list[tuple[re.Pattern[str], str]]:
    return [(re.compile(p), r) for p, r in rules]


# ----------------------------------------------------------------------------------------------------------------
# Wan DiT
# ----------------------------------------------------------------------------------------------------------------


def wan_dit_key_to_diffusers(key: str) -> str:
    """Original Wan DiT key -> diffusers ``WanTransformer3DModel`` key, by diffusers' converter."""
    (new,) = convert_wan_transformer_to_diffusers({key: _PLACEHOLDER}).keys()
    return new


# diffusers -> original, applied in order. Shapes in comments are Wan2.1-I2V-14B's (D = 5120).
_DIT_INVERSE = _compile(
    [
        (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),  # [D, 256]
        (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),  # [D, D]
        (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),  # [D, 4096]
        (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),  # [D, D]
        (r"^condition_embedder\.time_proj\.", "time_projection.1."),  # [6D, D]
        (r"^condition_embedder\.image_embedder\.norm1\.", "img_emb.proj.0."),  # LayerNorm(1280)
        (r"^condition_embedder\.image_embedder\.ff\.net\.0\.proj\.", "img_emb.proj.1."),  # [1280, 1280]
        (r"^condition_embedder\.image_embedder\.ff\.net\.2\.", "img_emb.proj.3."),  # [D, 1280]
        (r"^condition_embedder\.image_embedder\.norm2\.", "img_emb.proj.4."),  # LayerNorm(D)
        (r"^scale_shift_table$", "head.modulation"),  # [1, 2, D]
        (r"^proj_out\.", "head.head."),  # [64, D]
        (r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation"),  # [1, 6, D]
        (r"^(blocks\.\d+)\.attn1\.", r"\1.self_attn."),
        (r"^(blocks\.\d+)\.attn2\.", r"\1.cross_attn."),
        (r"\.to_q\.", ".q."),
        (r"\.to_k\.", ".k."),
        (r"\.to_v\.", ".v."),
        (r"\.to_out\.0\.", ".o."),
        (r"\.add_k_proj\.", ".k_img."),
        (r"\.add_v_proj\.", ".v_img."),
        (r"\.norm_added_k\.", ".norm_k_img."),
        (r"^(blocks\.\d+)\.ffn\.net\.0\.proj\.", r"\1.ffn.0."),  # [13824, D]
        (r"^(blocks\.\d+)\.ffn\.net\.2\.", r"\1.ffn.2."),  # [D, 13824]
        # The affine cross-attention norm is norm2 in diffusers and norm3 in Wan (norm1/norm2 of Wan and
        # norm1/norm3 of diffusers have no parameters).
        (r"^(blocks\.\d+)\.norm2\.", r"\1.norm3."),
    ]
)


def diffusers_dit_key_to_wan(key: str) -> str:
    """diffusers ``WanTransformer3DModel`` key -> original Wan DiT key (inverse of diffusers' converter)."""
    return _apply(_DIT_INVERSE, key)


# ----------------------------------------------------------------------------------------------------------------
# Wan VAE
# ----------------------------------------------------------------------------------------------------------------


def wan_vae_key_to_diffusers(key: str) -> str:
    """Original ``Wan2.1_VAE.pth`` key -> diffusers ``AutoencoderKLWan`` key, by diffusers' converter."""
    (new,) = convert_wan_vae_to_diffusers({key: _PLACEHOLDER}).keys()
    return new


# Inside a residual block: diffusers name -> index in Wan's ``residual`` Sequential
# (RMSNorm, SiLU, CausalConv3d, RMSNorm, SiLU, Dropout, CausalConv3d).
_RES = {"norm1.": "residual.0.", "conv1.": "residual.2.", "norm2.": "residual.3.", "conv2.": "residual.6.",
        "conv_shortcut.": "shortcut."}  # fmt: skip
_RES_RE = re.compile(r"^(norm1\.|conv1\.|norm2\.|conv2\.|conv_shortcut\.)")


def _res(rest: str) -> str:
    m = _RES_RE.match(rest)
    return _RES[m[1]] + rest[m.end() :] if m else rest


def diffusers_vae_key_to_wan(key: str, *, num_res_blocks: int = 2) -> str:
    """diffusers ``AutoencoderKLWan`` key -> original ``Wan2.1_VAE.pth`` key (inverse of diffusers' converter).

    Wan's decoder keeps one flat ``upsamples`` list per stage: ``num_res_blocks + 1`` residual blocks then the
    upsampler, so up block ``b``'s resnet ``r`` is ``upsamples.{(num_res_blocks + 2) * b + r}``.
    """
    fixed = {
        "encoder.conv_in.": "encoder.conv1.",
        "decoder.conv_in.": "decoder.conv1.",
        "quant_conv.": "conv1.",
        "post_quant_conv.": "conv2.",
        "encoder.norm_out.": "encoder.head.0.",
        "encoder.conv_out.": "encoder.head.2.",
        "decoder.norm_out.": "decoder.head.0.",
        "decoder.conv_out.": "decoder.head.2.",
    }
    for old, new in fixed.items():
        if key.startswith(old):
            return new + key[len(old) :]
    if m := re.match(r"^(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.*)$", key):
        side, kind, i, rest = m.groups()
        if kind == "attentions":
            return f"{side}.middle.1.{rest}"
        return f"{side}.middle.{2 * int(i)}.{_res(rest)}"
    if m := re.match(r"^encoder\.down_blocks\.(\d+)\.(.*)$", key):
        return f"encoder.downsamples.{m[1]}.{_res(m[2])}"
    if m := re.match(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", key):
        idx = (num_res_blocks + 2) * int(m[1]) + int(m[2])
        return f"decoder.upsamples.{idx}.{_res(m[3])}"
    if m := re.match(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)$", key):
        idx = (num_res_blocks + 2) * int(m[1]) + num_res_blocks + 1
        return f"decoder.upsamples.{idx}.{m[2]}"
    return key


# ----------------------------------------------------------------------------------------------------------------
# umT5 encoder (Wan ``T5Encoder``, umt5-xxl: per-layer relative position bias, gated GELU-tanh FFN)
# ----------------------------------------------------------------------------------------------------------------

# Wan key (full match) -> transformers UMT5EncoderModel key. Shapes for umt5-xxl: vocab 256384, d 4096,
# 64 heads x 64, d_ff 10240, 32 buckets.
_T5_FORWARD = [
    (r"token_embedding\.weight", "shared.weight"),  # [vocab, d]
    (r"norm\.weight", "encoder.final_layer_norm.weight"),  # [d]
    (r"blocks\.(\d+)\.norm1\.weight", r"encoder.block.\1.layer.0.layer_norm.weight"),  # [d]
    (r"blocks\.(\d+)\.attn\.([qkvo])\.weight", r"encoder.block.\1.layer.0.SelfAttention.\2.weight"),  # [d, d]
    (
        r"blocks\.(\d+)\.pos_embedding\.embedding\.weight",  # [buckets, heads]
        r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias.weight",
    ),
    (r"blocks\.(\d+)\.norm2\.weight", r"encoder.block.\1.layer.1.layer_norm.weight"),  # [d]
    # Wan: fc2(fc1(x) * gelu_tanh(gate(x))); HF: wo(gelu_new(wi_0(x)) * wi_1(x)).
    (r"blocks\.(\d+)\.ffn\.gate\.0\.weight", r"encoder.block.\1.layer.1.DenseReluDense.wi_0.weight"),  # [d_ff, d]
    (r"blocks\.(\d+)\.ffn\.fc1\.weight", r"encoder.block.\1.layer.1.DenseReluDense.wi_1.weight"),  # [d_ff, d]
    (r"blocks\.(\d+)\.ffn\.fc2\.weight", r"encoder.block.\1.layer.1.DenseReluDense.wo.weight"),  # [d, d_ff]
]
_T5_FORWARD_RE = [(re.compile(p), r) for p, r in _T5_FORWARD]
_T5_INVERSE = [
    (re.compile(r"shared\.weight"), "token_embedding.weight"),
    (re.compile(r"encoder\.embed_tokens\.weight"), "token_embedding.weight"),  # tied alias of shared.weight
    (re.compile(r"encoder\.final_layer_norm\.weight"), "norm.weight"),
    (re.compile(r"encoder\.block\.(\d+)\.layer\.0\.layer_norm\.weight"), r"blocks.\1.norm1.weight"),
    (re.compile(r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.([qkvo])\.weight"), r"blocks.\1.attn.\2.weight"),
    (
        re.compile(r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.weight"),
        r"blocks.\1.pos_embedding.embedding.weight",
    ),
    (re.compile(r"encoder\.block\.(\d+)\.layer\.1\.layer_norm\.weight"), r"blocks.\1.norm2.weight"),
    (re.compile(r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.weight"), r"blocks.\1.ffn.gate.0.weight"),
    (re.compile(r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.weight"), r"blocks.\1.ffn.fc1.weight"),
    (re.compile(r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.weight"), r"blocks.\1.ffn.fc2.weight"),
]


def _full_match(rules: list[tuple[re.Pattern[str], str]], key: str) -> str | None:
    for pattern, repl in rules:
        if pattern.fullmatch(key):
            return pattern.sub(repl, key)
    return None


def t5_wan_key_to_hf(key: str) -> str | None:
    """Wan umT5 encoder key -> ``UMT5EncoderModel`` key (``None`` for a key Wan's encoder does not have)."""
    return _full_match(_T5_FORWARD_RE, key)


def t5_hf_key_to_wan(key: str) -> str | None:
    """``UMT5EncoderModel`` key -> Wan umT5 encoder key (``None`` for a key with no Wan counterpart)."""
    return _full_match(_T5_INVERSE, key)


# ----------------------------------------------------------------------------------------------------------------
# CLIP vision tower (Wan ``XLMRobertaCLIP.visual``, open-clip ViT-H/14: 1280 wide, 32 layers, exact GELU)
# ----------------------------------------------------------------------------------------------------------------

# Parts of ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` the image encoder does not use: the
# XLM-RoBERTa text tower, the contrastive temperature, and the vision projection head (the pipeline takes the
# penultimate hidden states, before any head).
CLIP_UNUSED_PREFIXES = ("textual.", "log_scale", "visual.head")

# Wan key (full match, after "visual.") -> CLIPVisionModel key (without any "vision_model." prefix).
_CLIP_FORWARD = [
    (r"patch_embedding\.weight", "embeddings.patch_embedding.weight"),  # [W, 3, 14, 14], no bias
    (r"cls_embedding", "embeddings.class_embedding"),  # Wan [1, 1, W] -> HF [W]
    (r"pos_embedding", "embeddings.position_embedding.weight"),  # Wan [1, 257, W] -> HF [257, W]
    (r"pre_norm\.(weight|bias)", r"pre_layrnorm.\1"),
    (r"post_norm\.(weight|bias)", r"post_layernorm.\1"),
    (r"transformer\.(\d+)\.norm1\.(weight|bias)", r"encoder.layers.\1.layer_norm1.\2"),
    (r"transformer\.(\d+)\.attn\.proj\.(weight|bias)", r"encoder.layers.\1.self_attn.out_proj.\2"),
    (r"transformer\.(\d+)\.norm2\.(weight|bias)", r"encoder.layers.\1.layer_norm2.\2"),
    (r"transformer\.(\d+)\.mlp\.0\.(weight|bias)", r"encoder.layers.\1.mlp.fc1.\2"),  # [4W, W]
    (r"transformer\.(\d+)\.mlp\.2\.(weight|bias)", r"encoder.layers.\1.mlp.fc2.\2"),  # [W, 4W]
]
_CLIP_FORWARD_RE = [(re.compile(p), r) for p, r in _CLIP_FORWARD]
_CLIP_QKV_RE = re.compile(r"transformer\.(\d+)\.attn\.to_qkv\.(weight|bias)")  # [3W, W] / [3W]
_CLIP_INVERSE_RE = [
    (re.compile(r"embeddings\.patch_embedding\.weight"), "patch_embedding.weight"),
    (re.compile(r"embeddings\.class_embedding"), "cls_embedding"),
    (re.compile(r"embeddings\.position_embedding\.weight"), "pos_embedding"),
    (re.compile(r"pre_layrnorm\.(weight|bias)"), r"pre_norm.\1"),
    (re.compile(r"post_layernorm\.(weight|bias)"), r"post_norm.\1"),
    (re.compile(r"encoder\.layers\.(\d+)\.layer_norm1\.(weight|bias)"), r"transformer.\1.norm1.\2"),
    (re.compile(r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)"), r"transformer.\1.attn.proj.\2"),
    (re.compile(r"encoder\.layers\.(\d+)\.layer_norm2\.(weight|bias)"), r"transformer.\1.norm2.\2"),
    (re.compile(r"encoder\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)"), r"transformer.\1.mlp.0.\2"),
    (re.compile(r"encoder\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)"), r"transformer.\1.mlp.2.\2"),
    (re.compile(r"encoder\.layers\.(\d+)\.self_attn\.[qkv]_proj\.(weight|bias)"), r"transformer.\1.attn.to_qkv.\2"),
]


def clip_wan_key_for_hf(key: str, prefix: str = "") -> str:
    """``CLIPVisionModel`` key -> the Wan checkpoint key it comes from (for messages; q/k/v name the fused qkv)."""
    bare = key[len(prefix) :] if prefix and key.startswith(prefix) else key
    wan = _full_match(_CLIP_INVERSE_RE, bare)
    if wan is None:
        return key
    if m := re.search(r"\.([qkv])_proj\.", bare):
        return f"visual.{wan} ({m[1]} part)"
    return f"visual.{wan}"


def clip_wan_to_hf(
    state: Mapping[str, torch.Tensor], prefix: str = ""
) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """Wan CLIP state dict -> ``CLIPVisionModel`` state dict.

    Returns ``(hf_state, source, unknown)``: ``source`` maps each HF key to the Wan key it came from, and
    ``unknown`` lists Wan keys that are neither vision-tower weights nor known-unused (see
    :data:`CLIP_UNUSED_PREFIXES`). ``prefix`` is prepended to HF keys (``"vision_model."`` on transformers
    versions whose ``CLIPVisionModel`` nests the tower).
    """
    out: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key.startswith(CLIP_UNUSED_PREFIXES):
            continue
        bare = key.removeprefix("visual.") if key.startswith("visual.") else None
        if bare is None:
            unknown.append(key)
            continue
        if m := _CLIP_QKV_RE.fullmatch(bare):
            layer, kind = m.groups()
            # Wan views the fused output as (..., 3, heads, head_dim): rows [0:W] are q, [W:2W] k, [2W:3W] v.
            parts = value.chunk(3, dim=0) if value.shape[0] % 3 == 0 else (value, value[:0], value[:0])
            for name, part in zip(("q", "k", "v"), parts):
                hf = f"{prefix}encoder.layers.{layer}.self_attn.{name}_proj.{kind}"
                out[hf], source[hf] = part, key
            continue
        hf = _full_match(_CLIP_FORWARD_RE, bare)
        if hf is None:
            unknown.append(key)
            continue
        if bare == "cls_embedding" and value.dim() == 3 and value.shape[:2] == (1, 1):
            value = value[0, 0]  # [1, 1, W] -> [W]
        elif bare == "pos_embedding" and value.dim() == 3 and value.shape[0] == 1:
            value = value[0]  # [1, N, W] -> [N, W]
        out[prefix + hf], source[prefix + hf] = value, key
    return out, source, unknown


def clip_hf_to_wan(state: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """``CLIPVisionModel`` state dict -> Wan ``visual.*`` keys (fused qkv, [1, 1, W] cls, [1, N, W] positions).

    Only the vision tower: callers add the unused ``textual.*`` / ``log_scale`` / ``visual.head`` entries.
    """
    bare = {k[len(prefix) :] if prefix and k.startswith(prefix) else k: v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    layers = sorted({int(m[1]) for k in bare if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    for i in layers:
        for kind in ("weight", "bias"):
            qkv = [bare.pop(f"encoder.layers.{i}.self_attn.{n}_proj.{kind}") for n in ("q", "k", "v")]
            out[f"visual.transformer.{i}.attn.to_qkv.{kind}"] = torch.cat(qkv, dim=0)
    for key, value in bare.items():
        wan = _full_match(_CLIP_INVERSE_RE, key)
        if wan is None:
            raise KeyError(f"no Wan CLIP name for {key}")
        if wan == "cls_embedding":
            value = value.reshape(1, 1, -1)
        elif wan == "pos_embedding":
            value = value.unsqueeze(0)
        out[f"visual.{wan}"] = value
    return out
