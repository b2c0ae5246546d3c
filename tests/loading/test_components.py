"""build_pipeline_components: every model built from either layout, audio weights loaded and checked."""

from __future__ import annotations

import pytest
import torch

from fantasytalking.errors import WeightsError
from fantasytalking.loading import (
    build_pipeline_components,
    load_fantasytalking_state,
    resolve_weights,
    save_fantasytalking_state,
)
from fantasytalking.testing import make_tiny_weights


@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_components_from_tiny_weights(tmp_path, layout):
    paths = resolve_weights(make_tiny_weights(tmp_path, layout))
    parts = build_pipeline_components(paths, dtype=torch.float32)
    assert set(parts) == {"transformer", "conditioning", "vae", "text_encoder", "tokenizer", "image_encoder",
                          "image_processor"}  # fmt: skip
    state = load_fantasytalking_state(paths.fantasytalking)
    branch = parts["transformer"].audio_branch_state_dict()
    assert branch.keys() == {k for k in state if k.startswith("blocks.")}
    assert all(torch.equal(branch[k], state[k]) for k in branch)
    projector = parts["conditioning"]["audio"].projector_state_dict()
    assert all(torch.equal(projector[k], state[k]) for k in projector)
    assert parts["conditioning"]["audio"].sample_rate == 16000
    assert parts["transformer"].text_len == 512


def test_audio_weights_for_another_dit_size_are_refused(tmp_path):
    root = make_tiny_weights(tmp_path, "original")
    state = load_fantasytalking_state(root / "fantasytalking_model.ckpt")
    for kv in ("k", "v"):  # a third block: weights made for a deeper DiT
        state[f"blocks.2.cross_attn.processor.{kv}_proj.weight"] = torch.ones(24, 16)
    save_fantasytalking_state(state, root / "fantasytalking_model.ckpt")
    with pytest.raises(WeightsError, match="3 blocks of width 24, but the Wan checkpoint has 2 blocks"):
        build_pipeline_components(resolve_weights(root))
