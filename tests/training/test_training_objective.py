"""The objective's plain functions: noise levels, the flow-matching pair, the latent lip mask, generators."""

from __future__ import annotations

import torch
from training_helpers import one_thread  # noqa: F401 (autouse fixture)

from fantasytalking.sampling import flow_match_sigmas
from fantasytalking.training import (
    flow_matching_pair,
    latent_lip_mask,
    masked_mean,
    sample_sigmas,
    shift_sigmas,
    step_generator,
)


def test_shifted_sigmas_follow_the_sampling_schedule():
    # The training warp is the sampler's: the inference sigmas are shift_sigmas of the linspace.
    s = torch.linspace(1.0, 0.0, 31, dtype=torch.float64)[:-1]
    torch.testing.assert_close(shift_sigmas(s, 5.0), flow_match_sigmas(30, 5.0)[:-1])
    sigmas = sample_sigmas(20000, torch.Generator().manual_seed(0), shift=5.0)
    assert sigmas.dtype == torch.float32 and float(sigmas.min()) > 0 and float(sigmas.max()) < 1
    # shift 5 pushes mass to high noise: P(sigma > 0.5) = P(u > 1/6) = 5/6
    assert abs(float((sigmas > 0.5).float().mean()) - 5 / 6) < 0.01
    logit = sample_sigmas(20000, torch.Generator().manual_seed(0), shift=1.0, sampling="logit_normal")
    assert abs(float(logit.median()) - 0.5) < 0.02


def test_flow_matching_pair():
    x0, noise = torch.randn(2, 16, 3, 4, 4), torch.randn(2, 16, 3, 4, 4)
    x_t, target, timesteps = flow_matching_pair(x0, noise, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(x_t[0], x0[0])
    torch.testing.assert_close(x_t[1], noise[1])
    torch.testing.assert_close(target, noise - x0)
    assert timesteps.tolist() == [0.0, 1000.0]
    # one Euler step of the true velocity from sigma to 0 recovers x0 (the sampler's update)
    sigma = torch.tensor([0.7, 0.3])
    x_t, target, _ = flow_matching_pair(x0, noise, sigma)
    torch.testing.assert_close(x_t + (0 - sigma).view(-1, 1, 1, 1, 1) * target, x0)


def test_latent_lip_mask_and_masked_mean():
    mask = torch.zeros(1, 1, 9, 32, 32)
    mask[:, :, :, 16:24, 8:24] = 1  # lower-middle region of every frame
    latent = latent_lip_mask(mask, (3, 4, 4))
    assert latent.shape == (1, 1, 3, 4, 4)
    assert float(latent[..., :2, :].max()) == 0.0  # rows 0-15 have no lip pixel
    assert float(latent[..., 2, 1:3].min()) == 1.0
    error = torch.rand(1, 16, 3, 4, 4)
    inside = latent > 0
    expected = (error * latent).sum() / (latent.sum() * 16)
    torch.testing.assert_close(masked_mean(error, latent), expected.view(1))
    assert bool(inside.any())


def test_step_generators_are_reproducible_and_distinct():
    a = torch.rand(4, generator=step_generator(1, "train", 7, 0, 0))
    b = torch.rand(4, generator=step_generator(1, "train", 7, 0, 0))
    c = torch.rand(4, generator=step_generator(1, "train", 8, 0, 0))
    d = torch.rand(4, generator=step_generator(1, "train", 7, 0, 1))  # another rank
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, d)
