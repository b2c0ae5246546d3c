"""umT5, CLIP and wav2vec2 loaders: layouts agree, Wan's numerics are reproduced, broken files are named.

The reference functions below re-implement the forward passes of Wan2.1's own modules (``wan/modules/t5.py``
``T5Encoder`` and ``wan/modules/clip.py`` ``VisionTransformer`` with ``use_31_block=True``) directly on the Wan
state dicts, so the tests check both the key mapping and that the transformers models compute the same thing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fantasytalking.errors import WeightsError
from fantasytalking.loading import load_image_encoder, load_text_encoder, load_wav2vec2
from fantasytalking.testing import TINY_CLIP, TINY_T5, make_tiny_weights

WAN = "Wan2.1-I2V-14B-720P"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    make_tiny_weights(root / "o", "original", seed=0)
    make_tiny_weights(root / "d", "diffusers", seed=0)
    return {"original": root / "o" / WAN, "diffusers": root / "d" / f"{WAN}-Diffusers", "root": root / "o"}


@pytest.fixture
def wan(tmp_path) -> Path:
    return make_tiny_weights(tmp_path, "original") / WAN


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(WeightsError) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# Reference forwards in Wan's naming
# ---------------------------------------------------------------------------------------------------------------


def wan_t5_reference(sd: dict, ids: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """Wan's umT5 encoder: RMS norm, unscaled attention + per-layer bidirectional bucketed bias, gated GELU-tanh."""
    sd = {k: v.float() for k, v in sd.items()}
    b, n = ids.shape
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))

    def bucket(rel, buckets=32, max_dist=128):
        half = buckets // 2  # bidirectional: half the buckets per direction
        out = (rel > 0).long() * half
        rel = rel.abs()
        exact = half // 2
        large = exact + (torch.log(rel.float() / exact) / math.log(max_dist / exact) * (half - exact)).long()
        return out + torch.where(rel < exact, rel, large.clamp(max=half - 1))

    rel = bucket(torch.arange(n)[None, :] - torch.arange(n)[:, None])  # [Lq, Lk], key minus query
    x = sd["token_embedding.weight"][ids]
    for i in range(layers):
        p = f"blocks.{i}."
        h = rms(x, sd[p + "norm1.weight"])
        q, k, v = ((h @ sd[p + f"attn.{c}.weight"].T).view(b, n, heads, -1) for c in "qkv")
        bias = sd[p + "pos_embedding.embedding.weight"][rel].permute(2, 0, 1)[None]  # [1, H, Lq, Lk]
        bias = bias.masked_fill(mask.view(b, 1, 1, n) == 0, torch.finfo(x.dtype).min)
        attn = torch.softmax(torch.einsum("binc,bjnc->bnij", q, k) + bias, dim=-1)
        x = x + torch.einsum("bnij,bjnc->binc", attn, v).reshape(b, n, -1) @ sd[p + "attn.o.weight"].T
        h = rms(x, sd[p + "norm2.weight"])
        gate = F.gelu(h @ sd[p + "ffn.gate.0.weight"].T, approximate="tanh")
        x = x + ((h @ sd[p + "ffn.fc1.weight"].T) * gate) @ sd[p + "ffn.fc2.weight"].T
    return rms(x, sd["norm.weight"])


def wan_clip_reference(sd: dict, pixels: torch.Tensor, heads: int) -> torch.Tensor:
    """Wan's ViT with ``use_31_block=True``: all but the last block, pre-norm, exact GELU, no post norm."""
    patch = sd["visual.patch_embedding.weight"].shape[-1]
    x = F.conv2d(pixels, sd["visual.patch_embedding.weight"], stride=patch).flatten(2).transpose(1, 2)
    x = torch.cat([sd["visual.cls_embedding"].expand(x.shape[0], -1, -1), x], dim=1) + sd["visual.pos_embedding"]
    width = x.shape[-1]

    def ln(x, name):
        return F.layer_norm(x, (width,), sd[name + ".weight"], sd[name + ".bias"], eps=1e-5)

    x = ln(x, "visual.pre_norm")
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("visual.transformer."))
    for i in range(layers - 1):
        p = f"visual.transformer.{i}."
        h = ln(x, p + "norm1")
        qkv = F.linear(h, sd[p + "attn.to_qkv.weight"], sd[p + "attn.to_qkv.bias"])
        q, k, v = qkv.view(*x.shape[:2], 3, heads, -1).unbind(2)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + F.linear(o.transpose(1, 2).reshape(x.shape), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.gelu(F.linear(ln(x, p + "norm2"), sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"]))
        x = x + F.linear(h, sd[p + "mlp.2.weight"], sd[p + "mlp.2.bias"])
    return x


# ---------------------------------------------------------------------------------------------------------------
# umT5
# ---------------------------------------------------------------------------------------------------------------


def test_t5_layouts_agree_and_match_wan_numerics(tiny):
    model_o, tok_o = load_text_encoder(tiny["original"], dtype=torch.float32)
    model_d, tok_d = load_text_encoder(tiny["diffusers"], dtype=torch.float32)
    assert model_o.config.d_model == 32 and model_o.config.num_heads == 2 and model_o.config.d_kv == 16
    prompts = ["A woman is talking.", "a"]
    enc = tok_o(prompts, padding="max_length", max_length=512, truncation=True, return_tensors="pt")
    assert enc.input_ids.equal(tok_d(prompts, padding="max_length", max_length=512, return_tensors="pt").input_ids)
    assert enc.input_ids[1, :3].tolist() == [3, tok_o.convert_tokens_to_ids("a"), 1]  # "▁", "a", "</s>"
    with torch.no_grad():
        out_o = model_o(enc.input_ids, attention_mask=enc.attention_mask).last_hidden_state
        out_d = model_d(enc.input_ids, attention_mask=enc.attention_mask).last_hidden_state
    assert torch.equal(out_o, out_d)
    wan_state = torch.load(str(tiny["original"] / T5_FILE), weights_only=True)
    ref = wan_t5_reference(wan_state, enc.input_ids, enc.attention_mask, heads=TINY_T5["num_heads"])
    torch.testing.assert_close(out_o, ref, rtol=1e-4, atol=1e-5)


def test_t5_bf16_load(tiny):
    model, _ = load_text_encoder(tiny["original"] / T5_FILE, dtype=torch.bfloat16)
    assert model.shared.weight.dtype == torch.bfloat16
    assert model.encoder.embed_tokens.weight is model.shared.weight  # tied, not duplicated


def _edit_pth(file: Path, edit) -> None:
    state = torch.load(str(file), weights_only=True)
    edit(state)
    torch.save(state, str(file))


def test_t5_renamed_missing_reshaped_are_named(wan):
    file = wan / T5_FILE

    def edit(s):
        s["blocks.1.ffn.gate.1.weight"] = s.pop("blocks.1.ffn.gate.0.weight")  # renamed
        s.pop("blocks.1.norm2.weight")  # missing
        s["blocks.0.attn.o.weight"] = torch.zeros(32, 16)  # reshaped

    _edit_pth(file, edit)
    message = _error(load_text_encoder, wan, dtype=torch.float32)
    assert "2 missing (blocks.1.ffn.gate.0.weight, blocks.1.norm2.weight)" in message
    assert "1 unexpected (blocks.1.ffn.gate.1.weight)" in message
    assert "blocks.0.attn.o.weight: expected [32, 32], got [32, 16]" in message
    assert str(file) in message


def test_t5_truncated_and_missing_tokenizer_are_named(wan, tmp_path):
    import shutil

    shutil.rmtree(wan / "google")
    message = _error(load_text_encoder, wan, dtype=torch.float32)
    assert str(wan / "google" / "umt5-xxl") in message
    file = wan / T5_FILE
    file.write_bytes(file.read_bytes()[:-200])
    assert str(file) in _error(load_text_encoder, wan, dtype=torch.float32)


# ---------------------------------------------------------------------------------------------------------------
# CLIP
# ---------------------------------------------------------------------------------------------------------------


def test_clip_layouts_agree_and_match_wan_penultimate_block(tiny):
    model_o, proc_o = load_image_encoder(tiny["original"], dtype=torch.float32)
    model_d, _ = load_image_encoder(tiny["diffusers"], dtype=torch.float32)
    assert model_o.config.num_attention_heads == 2 and model_o.config.image_size == 32
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden_o = model_o(pixels, output_hidden_states=True).hidden_states
        hidden_d = model_d(pixels, output_hidden_states=True).hidden_states
    assert hidden_o[-2].shape == (2, 5, 32)  # class token + 2x2 patches
    assert torch.equal(hidden_o[-2], hidden_d[-2])
    wan_state = torch.load(str(tiny["original"] / CLIP_FILE), weights_only=True)
    ref = wan_clip_reference(wan_state, pixels, heads=TINY_CLIP["num_attention_heads"])
    torch.testing.assert_close(hidden_o[-2], ref, rtol=1e-4, atol=1e-5)

    from PIL import Image

    image = Image.new("RGB", (48, 80), (255, 0, 0))
    assert proc_o(images=image, return_tensors="pt").pixel_values.shape == (1, 3, 32, 32)  # squashed, not cropped


def test_clip_unknown_and_missing_keys_are_named(wan):
    file = wan / CLIP_FILE

    def edit(s):
        s["visual.transformer.1.attn.qkv.weight"] = s.pop("visual.transformer.1.attn.to_qkv.weight")

    _edit_pth(file, edit)
    message = _error(load_image_encoder, wan, dtype=torch.float32)
    assert "visual.transformer.1.attn.to_qkv.weight (q part)" in message
    assert "1 unexpected (visual.transformer.1.attn.qkv.weight)" in message


def test_clip_head_count_needs_a_sidecar_when_not_vit_h(wan):
    (wan / f"{CLIP_FILE}.config.json").unlink()
    message = _error(load_image_encoder, wan, dtype=torch.float32)
    assert f"{CLIP_FILE}.config.json" in message and "num_attention_heads" in message


# ---------------------------------------------------------------------------------------------------------------
# wav2vec2
# ---------------------------------------------------------------------------------------------------------------


def test_wav2vec2_loads_and_gives_50_tokens_per_second(tiny):
    model, extractor = load_wav2vec2(tiny["root"] / "wav2vec2-base-960h")
    assert extractor.sampling_rate == 16000
    audio = torch.randn(32000, generator=torch.Generator().manual_seed(0)).numpy()
    values = extractor(audio, sampling_rate=16000, return_tensors="pt").input_values
    with torch.no_grad():
        tokens = model(values).last_hidden_state
    assert tokens.shape == (1, 99, 32)  # 2 s -> ~50 tokens/s


def test_wav2vec2_problems_are_named(tmp_path):
    folder = make_tiny_weights(tmp_path, "original") / "wav2vec2-base-960h"
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    state.pop("wav2vec2.encoder.layers.1.final_layer_norm.bias")
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    assert "encoder.layers.1.final_layer_norm.bias" in _error(load_wav2vec2, folder)

    config = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps(config | {"sampling_rate": 8000}))
    (folder / "model.safetensors").write_bytes(b"\x00" * 16)
    assert str(folder / "model.safetensors") in _error(load_wav2vec2, folder)
