"""Inverse key mappings round-trip through diffusers' trusted forward converters, and T5/CLIP mappings invert."""

from __future__ import annotations

import re

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

from fantasytalking.loading.mappings import (
    clip_hf_to_wan,
    clip_wan_to_hf,
    diffusers_dit_key_to_wan,
    diffusers_vae_key_to_wan,
    t5_hf_key_to_wan,
    t5_wan_key_to_hf,
    wan_dit_key_to_diffusers,
    wan_vae_key_to_diffusers,
)
from fantasytalking.loading.wan import wan_config_to_diffusers
from fantasytalking.testing import TINY_CLIP, TINY_DIT, TINY_T5, TINY_VAE

# Wan2.1-I2V-14B-720P's config.json
WAN_14B_CONFIG = {"_class_name": "WanModel", "dim": 5120, "eps": 1e-06, "ffn_dim": 13824, "freq_dim": 256,
                  "in_dim": 36, "model_type": "i2v", "num_heads": 40, "num_layers": 40, "out_dim": 16, "text_len": 512}  # fmt: skip

# Names that exist only on the diffusers side: none may survive the inverse mapping.
DIFFUSERS_ONLY = re.compile(
    r"attn1|attn2|to_q\.|to_k\.|to_v\.|to_out|add_k_proj|add_v_proj|norm_added|condition_embedder|scale_shift_table"
    r"|proj_out|ffn\.net|down_blocks|up_blocks|mid_block|conv_in|conv_out|norm_out|quant_conv|resnets|conv_shortcut"
)


def _meta(cls, **config):
    with init_empty_weights():
        return cls(**config)


@pytest.mark.parametrize("config", [TINY_DIT, "14B"], ids=["tiny", "14B"])
def test_dit_inverse_round_trips_through_diffusers_converter(config):
    if config == "14B":  # the real model's key set and shapes, on meta (no memory)
        shapes = {"text_embedding.0.weight": (5120, 4096), "img_emb.proj.0.weight": (1280,)}
        config = wan_config_to_diffusers(WAN_14B_CONFIG, shapes)
    model = _meta(WanTransformer3DModel, **config)
    keys = list(model.state_dict())
    originals = [diffusers_dit_key_to_wan(k) for k in keys]
    assert len(set(originals)) == len(keys)
    assert [wan_dit_key_to_diffusers(k) for k in originals] == keys
    assert not [k for k in originals if DIFFUSERS_ONLY.search(k)]


def test_dit_inverse_gives_the_release_names_and_shapes():
    shapes = {"text_embedding.0.weight": (5120, 4096), "img_emb.proj.0.weight": (1280,)}
    model = _meta(WanTransformer3DModel, **wan_config_to_diffusers(WAN_14B_CONFIG, shapes))
    original = {diffusers_dit_key_to_wan(k): tuple(v.shape) for k, v in model.state_dict().items()}
    # Facts from the release (FANTASYTALKING.md section 2).
    assert original["blocks.0.modulation"] == (1, 6, 5120)
    assert original["time_projection.1.weight"] == (30720, 5120)
    assert original["head.head.weight"] == (64, 5120)
    assert original["head.modulation"] == (1, 2, 5120)
    assert original["img_emb.proj.1.weight"] == (1280, 1280)
    assert original["blocks.39.cross_attn.k_img.weight"] == (5120, 5120)
    assert original["blocks.39.norm3.weight"] == (5120,)
    assert "blocks.0.norm2.weight" not in original  # Wan's norm2 has no parameters
    assert original["blocks.0.ffn.0.weight"] == (13824, 5120)
    prefixes = {k.split(".")[0] for k in original}
    assert prefixes == {"blocks", "patch_embedding", "text_embedding", "time_embedding", "time_projection",
                        "img_emb", "head"}  # fmt: skip
    params = sum(torch.Size(s).numel() for s in original.values())
    assert 16.3e9 < params < 16.5e9  # "about 16.4B parameters"


def test_audio_processor_keys_map_like_the_release():
    key = "blocks.7.cross_attn.processor.k_proj.weight"
    assert wan_dit_key_to_diffusers(key) == "blocks.7.attn2.processor.k_proj.weight"
    assert diffusers_dit_key_to_wan("blocks.7.attn2.processor.k_proj.weight") == key


@pytest.mark.parametrize("base_dim", [TINY_VAE["base_dim"], 96], ids=["tiny", "wan2.1"])
def test_vae_inverse_round_trips_through_diffusers_converter(base_dim):
    model = _meta(AutoencoderKLWan, **{**TINY_VAE, "base_dim": base_dim})
    keys = list(model.state_dict())
    originals = [diffusers_vae_key_to_wan(k) for k in keys]
    assert len(set(originals)) == len(keys)
    assert [wan_vae_key_to_diffusers(k) for k in originals] == keys
    assert not [k for k in originals if DIFFUSERS_ONLY.search(k)]
    allowed = re.compile(r"^(conv[12]|(encoder|decoder)\.(conv1|head\.[02]|middle\.[012])|encoder\.downsamples\.\d+"
                         r"|decoder\.upsamples\.\d+)\.")  # fmt: skip
    assert all(allowed.match(k) for k in originals)


def test_t5_mapping_inverts():
    model = _meta(UMT5EncoderModel, config=UMT5Config(**TINY_T5))
    keys = [k for k in model.state_dict() if k != "encoder.embed_tokens.weight"]  # tied alias of shared.weight
    wan = [t5_hf_key_to_wan(k) for k in keys]
    assert None not in wan and len(set(wan)) == len(keys)
    assert [t5_wan_key_to_hf(k) for k in wan] == keys
    assert "blocks.1.pos_embedding.embedding.weight" in wan  # umT5: relative bias in every layer
    assert t5_wan_key_to_hf("pos_embedding.embedding.weight") is None  # shared bias = plain T5, not umT5


def test_clip_mapping_inverts_with_values():
    torch.manual_seed(0)
    model = CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP))
    state = model.state_dict()
    wan = clip_hf_to_wan(state)
    assert wan["visual.cls_embedding"].shape == (1, 1, 32)
    assert wan["visual.pos_embedding"].shape == (1, 5, 32)
    assert wan["visual.transformer.1.attn.to_qkv.weight"].shape == (96, 32)
    back, source, unknown = clip_wan_to_hf({**wan, "log_scale": torch.zeros(()), "textual.x": torch.zeros(1)})
    assert unknown == []
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)
    assert source["encoder.layers.0.self_attn.k_proj.weight"] == "visual.transformer.0.attn.to_qkv.weight"
    _, _, unknown = clip_wan_to_hf({"visual.transformer.0.attn.qkv.weight": torch.zeros(3), "foo": torch.zeros(1)})
    assert unknown == ["visual.transformer.0.attn.qkv.weight", "foo"]
