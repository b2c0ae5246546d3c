"""WanVAETrainer: the loss goes down on a repeated batch; the export round-trips with latent statistics."""

from __future__ import annotations

import pytest
import torch

from fantasytalking.errors import InputError
from fantasytalking.training.vae import WanVAETrainer

# A small Wan VAE (stride 4x8x8 kept, 8 base channels): fast on CPU.
SMALL_VAE = {"base_dim": 8, "z_dim": 16, "dim_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_scales": [],
             "temperal_downsample": [False, True, True]}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models run fastest on one thread; 2 shared cores stall when OpenMP threads compete."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _video(batch: int = 2, frames: int = 5, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random clips (B, 3, N, H, W) in [-1, 1]: low-frequency patterns a VAE can learn quickly."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, frames, 4, 4, generator=gen) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(frames, size, size), mode="trilinear").clamp(-1, 1)


def test_vae_loss_decreases_on_a_repeated_batch() -> None:
    torch.manual_seed(0)
    module = WanVAETrainer(SMALL_VAE, lr=1e-3, sample_posterior=False)
    optimizer = module.configure_optimizers()
    batch = {"video": _video(frames=1)}  # single frames: ~0.2 s a step (clips of 5 frames: ~2 s)
    losses = []
    for step in range(12):
        gen = torch.Generator().manual_seed(step)
        out = module.compute_loss(module.select_frames(batch["video"], gen), gen)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["loss"].detach()))
    with torch.no_grad():
        final = float(module.compute_loss(batch["video"], torch.Generator().manual_seed(0))["loss"])
    assert final < losses[0] * 0.96, (losses, final)  # measured: 0.361 -> ~0.33 in 10 steps


def test_select_frames_shapes() -> None:
    module = WanVAETrainer(SMALL_VAE, single_frame_prob=1.0, frames_per_clip=3)
    video = _video(batch=2, frames=5)
    frames = module.select_frames(video, torch.Generator().manual_seed(0))
    assert frames.shape == (6, 3, 1, 32, 32)
    with pytest.raises(InputError):
        module.compute_loss(video[:, :, :4], torch.Generator())


def test_export_round_trip_and_normalised_latents(tmp_path) -> None:
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    module = WanVAETrainer(SMALL_VAE)
    batches = [{"video": _video(seed=1)}, {"video": _video(seed=2)}]
    path = module.export_vae(tmp_path / "vae", batches=batches)
    loaded = AutoencoderKLWan.from_pretrained(str(path)).eval()
    for a, b in zip(module.vae.state_dict().values(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b)
    video = torch.cat([b["video"] for b in batches])
    with torch.no_grad():
        z = loaded.encode(video).latent_dist.mode()  # (B, z, F, h, w)
    mean = torch.tensor(loaded.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(loaded.config.latents_std).view(1, -1, 1, 1, 1)
    normalised = ((z - mean) / std).transpose(0, 1).reshape(16, -1)  # (z, B*F*h*w)
    assert normalised.mean(1).abs().max() < 1e-3
    assert (normalised.std(1) - 1).abs().max() < 1e-3
