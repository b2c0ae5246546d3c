"""The ``demo`` preset: builds, generates a short clip on CPU, trains a step of each stage, fits the size budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

import fantasytalking.face as ftface
from fantasytalking.errors import WeightsError
from fantasytalking.training import (
    BackboneConfig,
    StageOneClipAligner,
    StageTwoLipRefiner,
    SyntheticTalkingDataset,
    export_conditioning,
)
from fantasytalking.training.builder import build_pipeline
from fantasytalking.training.export import load_into_pipeline
from fantasytalking.training.presets import DEMO_DIT, DEMO_FACE, DEMO_MOTION, demo_parameter_counts, demo_pipeline

CHECKPOINT_BUDGET = 50_000_000  # bytes: the demo checkpoint ships in the repository


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models run fastest on one thread; 2 shared cores stall when OpenMP threads compete."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipe():
    return demo_pipeline(seed=0)


def test_demo_pipeline_sizes_and_budget(pipe) -> None:
    counts = demo_parameter_counts(pipe)
    print("demo parameter counts:", counts)  # shown with pytest -s
    assert pipe.transformer.inner_dim == DEMO_DIT["num_attention_heads"] * DEMO_DIT["attention_head_dim"] == 256
    assert pipe.transformer.num_layers == 6
    assert pipe.conditioning.names == ["audio", "face", "motion"]
    # Wan's spatial stride kept; no temporal compression (docs/design.md), so 1 mask channel, not 4
    assert (pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial) == (1, 8)
    assert pipe.transformer.transformer.config.in_channels == 2 * 16 + 1
    assert pipe.audio_conditioner.temporal_stride == 1 and pipe.audio_conditioner.window_positions == 11
    # measured: transformer 6.95M, face 0.41M, motion 0.09M, audio 0.01M, VAE 1.19M, umT5 + CLIP 0.08M: 8.72M
    assert 7e6 < counts["total"] < 10e6
    assert counts["total"] * 2 < CHECKPOINT_BUDGET  # fp16 / bf16: ~17.4 MB
    assert counts["total"] * 4 < CHECKPOINT_BUDGET  # even fp32: ~34.9 MB


def test_demo_preset_through_build_pipeline() -> None:
    built = build_pipeline(BackboneConfig(preset="demo", seed=0))
    assert built.conditioning.names == ["audio"]  # the training module attaches face / motion itself
    assert built.audio_conditioner.audio_in_dim == 80


class _StubFaceEncoder:
    def encode(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return np.linspace(-0.2, 0.2, 128, dtype=np.float32)


def test_demo_generates_a_64px_9_frame_clip(pipe, monkeypatch) -> None:
    # The portrait is a random image: skip dlib's detector, give fixed 128-d "dlib" features.
    monkeypatch.setattr(ftface, "detect_face_landmarks", lambda rgb, backend=None: (None, np.zeros((68, 2))))
    object.__setattr__(pipe.conditioning["face"], "_encoder", _StubFaceEncoder())
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    audio = (0.1 * rng.standard_normal(16000 // 2)).astype(np.float32)  # 0.5 s of 16 kHz "speech"
    out = pipe(image, audio, num_inference_steps=2, max_edge=64, max_frames=9, seed=0, progress=False,
               face_motion=0.3, body_motion=0.6)  # fmt: skip
    assert out.frames.shape == (9, 64, 64, 3) and out.frames.dtype == np.uint8
    assert (out.settings.face_motion, out.settings.body_motion) == (0.3, 0.6)


@pytest.mark.parametrize("cls", [StageOneClipAligner, StageTwoLipRefiner])
def test_one_training_step_of_each_stage_lowers_the_loss(cls, tmp_path) -> None:
    torch.manual_seed(0)
    module = cls(backbone={"preset": "demo"}, face=DEMO_FACE, motion=DEMO_MOTION, trainable={"mode": "full"},
                 optim={"lr": 1e-4})  # fmt: skip
    data = SyntheticTalkingDataset(2, num_frames=5, size=32, seed=0, identical=True)
    batch = default_collate([data[i] for i in range(2)])
    optimizer = module.configure_optimizers()["optimizer"]
    before = module.compute_loss(batch, torch.Generator().manual_seed(0))  # the same draws before and after
    optimizer.zero_grad()
    before.loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = module.compute_loss(batch, torch.Generator().manual_seed(0))
    print(f"{cls.__name__}: loss before / after one step {float(before.loss.detach()):.4f} / {float(after.loss):.4f}")
    assert float(after.loss) < float(before.loss.detach())
    # The trained demo model (backbone + conditioners) exports under the budget and loads into demo_pipeline.
    path = export_conditioning(module, tmp_path / "demo.safetensors")
    assert path.stat().st_size < CHECKPOINT_BUDGET  # fp32: ~29.9 MB (7.46M trained parameters)
    loaded = demo_pipeline(seed=0, conditioning=path)
    assert loaded.conditioning.names == ["audio", "face", "motion"]
    trained = module.transformer.transformer.blocks[0].attn1.to_q.weight
    torch.testing.assert_close(loaded.transformer.transformer.blocks[0].attn1.to_q.weight, trained)
    # the demo's offset-in-window embedding travels with the export, into a pipeline built with or without one
    with torch.no_grad():
        module.audio_conditioner.window_position.add_(0.5)
    path = export_conditioning(module, tmp_path / "positions.safetensors")
    without = demo_pipeline(seed=0, conditioners=False)
    without.audio_conditioner.window_position = None  # as a pipeline built for the release
    for target in (demo_pipeline(seed=0, conditioners=False), without):
        load_into_pipeline(target, path)
        torch.testing.assert_close(target.audio_conditioner.window_position,
                                   module.audio_conditioner.window_position)  # fmt: skip
    bare = demo_pipeline(seed=0, conditioners=False)
    bare.audio_conditioner.window_position = torch.nn.Parameter(torch.zeros(15, 128))
    with pytest.raises(WeightsError, match="window_position has shape"):
        load_into_pipeline(bare, path)


def test_pipeline_refuses_audio_windows_of_another_temporal_stride() -> None:
    from fantasytalking.pipeline import FantasyTalkingPipeline
    from fantasytalking.training.presets import demo_components

    components = demo_components(seed=0)
    components["conditioning"]["audio"].temporal_stride = 4  # the 14B's windows over a per-frame VAE
    with pytest.raises(ValueError, match="temporal_stride=1"):
        FantasyTalkingPipeline(**components)
