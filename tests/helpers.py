"""Tiny real components shared by the tests (no mocks: the same classes as the 14B model)."""

from __future__ import annotations

import copy

import torch
from diffusers import WanTransformer3DModel

from fantasytalking.models import FantasyTalkingTransformer

# Same sizes as `python -m fantasytalking.testing make-tiny-weights`.
TINY_WAN = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36, out_channels=16,
    text_dim=32, freq_dim=16, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    eps=1e-6, image_dim=32, added_kv_proj_dim=24, rope_max_seq_len=1024,
)
TINY_AUDIO_DIM = 16
TEXT_LEN = 512  # Wan's stock processor assumes 512 text tokens, so the tiny tests keep it


def tiny_pair(seed: int = 0) -> tuple[WanTransformer3DModel, FantasyTalkingTransformer]:
    """A plain diffusers Wan and a FantasyTalking model around an identical copy of it."""
    torch.manual_seed(seed)
    plain = WanTransformer3DModel.from_config(TINY_WAN).eval()
    return plain, FantasyTalkingTransformer(copy.deepcopy(plain), audio_dim=TINY_AUDIO_DIM, text_len=TEXT_LEN).eval()


def tiny_inputs(frames: int = 5, size: int = 8, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, TINY_WAN["in_channels"], frames, size, size, generator=g),
        "timestep": torch.tensor([700.0]),
        "encoder_hidden_states": torch.randn(1, TEXT_LEN, TINY_WAN["text_dim"], generator=g),
        "encoder_hidden_states_image": torch.randn(1, 5, TINY_WAN["image_dim"], generator=g),
    }


def randomise_audio_branch(model: FantasyTalkingTransformer, seed: int = 2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.processors:
            p.k_proj.weight.copy_(torch.randn(p.k_proj.weight.shape, generator=g))
            p.v_proj.weight.copy_(torch.randn(p.v_proj.weight.shape, generator=g))
