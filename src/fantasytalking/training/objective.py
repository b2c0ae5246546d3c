"""The training objective as plain functions: noise levels, the flow-matching pair, the lip mask.

Flow matching (rectified flow, Wan2.1's parameterisation, FANTASYTALKING.md 3.7):

    x_t = (1 - sigma) * x_0 + sigma * noise,    v* = noise - x_0,    timestep = 1000 * sigma

so that the Euler sampler ``x <- x + (sigma_next - sigma) * v`` walks from noise to ``x_0``.

Every random draw takes an explicit CPU ``torch.Generator``: the draws do not depend on the
device, and :func:`step_generator` derives one per (seed, step, micro-batch, rank), which makes a
resumed run draw exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

NUM_TRAIN_TIMESTEPS = 1000  # timestep = 1000 * sigma, as in inference


def step_generator(seed: int, *parts: int | str) -> torch.Generator:
    """A CPU generator seeded by a hash of ``(seed, *parts)``, e.g. ``(seed, global_step, micro_batch, rank)``."""
    digest = hashlib.blake2b(repr((int(seed), *parts)).encode(), digest_size=8).digest()
    return torch.Generator("cpu").manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))


def shift_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """The schedule's warp ``sigma = shift*u / (1 + (shift-1)*u)`` (the same as inference's)."""
    return shift * u / (1 + (shift - 1) * u)


def sample_sigmas(
    batch_size: int,
    generator: torch.Generator,
    *,
    shift: float = 5.0,
    sampling: str = "shifted_uniform",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
) -> torch.Tensor:
    """Noise levels ``(B,)`` in ``(0, 1)`` (float32, CPU).

    ``shifted_uniform``: ``u ~ U(0, 1)``; ``logit_normal``: ``u = sigmoid(N(mean, std))``; then the warp.
    """
    if sampling == "shifted_uniform":
        u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
    elif sampling == "logit_normal":
        u = torch.sigmoid(logit_mean + logit_std * torch.randn(batch_size, generator=generator, dtype=torch.float64))
    else:
        raise ValueError(f"unknown sigma sampling {sampling!r}: use 'shifted_uniform' or 'logit_normal'")
    u = u.clamp(1e-4, 1 - 1e-4)  # avoid exactly clean / exactly noise samples
    return shift_sigmas(u, shift).float()


def flow_matching_pair(
    x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noisy input, velocity target and timesteps.

    Args:
        x0: ``(B, C, F, h, w)`` clean latents; noise: same shape; sigmas: ``(B,)``.

    Returns:
        ``x_t`` ``(B, C, F, h, w)``, target ``noise - x0`` ``(B, C, F, h, w)``, timesteps ``(B,)``.
    """
    s = sigmas.to(x0.device, x0.dtype).view(-1, *([1] * (x0.ndim - 1)))  # (B, 1, 1, 1, 1)
    x_t = (1 - s) * x0 + s * noise
    return x_t, noise - x0, sigmas.to(x0.device) * NUM_TRAIN_TIMESTEPS


def latent_lip_mask(lip_mask: torch.Tensor, latent_shape: tuple[int, int, int]) -> torch.Tensor:
    """Pixel-space lip masks brought to the latent grid by trilinear interpolation (the paper's ``M``).

    Args:
        lip_mask: ``(B, 1, N, H, W)`` masks in ``{0, 1}`` over the video frames.
        latent_shape: ``(F, h, w)`` of the latents.

    Returns:
        ``(B, 1, F, h, w)`` soft mask in ``[0, 1]`` (0 where no lip pixel is near).
    """
    if lip_mask.ndim != 5 or lip_mask.shape[1] != 1:
        raise ValueError(f"lip_mask must be (B, 1, N, H, W), got {tuple(lip_mask.shape)}")
    mask = F.interpolate(lip_mask.float(), size=tuple(latent_shape), mode="trilinear", align_corners=False)
    return mask.clamp(0.0, 1.0)


def masked_mean(error: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-sample mean of ``error`` ``(B, C, F, h, w)`` over the mask ``(B, 1, F, h, w)`` -> ``(B,)``.

    ``L_c = M * L`` normalised by the mask's area, so a sample's lip loss has the scale of the plain loss.
    """
    weighted = (error * mask).flatten(1).sum(dim=1)  # (B,)
    area = (mask.flatten(1).sum(dim=1) * error.shape[1]).clamp_min(eps)  # (B,) mask cells x channels
    return weighted / area


def degrade_reference(
    frames: torch.Tensor,
    generator: torch.Generator,
    *,
    colour_std: float,
    blur_max: float,
    round_trips_max: int,
    round_trip: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """A drifted copy of reference frames ``(B, 3, H, W)`` in ``[-1, 1]``, as the last frame of a generated segment
    is when it becomes the next segment's reference (``ObjectiveConfig.reference_degrade_p``).

    Per frame, in this order: ``k ~ U{0..round_trips_max}`` passes through ``round_trip`` (the VAE's decode of its
    encode), a Gaussian blur of standard deviation ``~ U(0, blur_max)`` pixels, then a colour shift
    ``x * (1 + g) + o`` with ``g, o ~ N(0, colour_std)`` per RGB channel (in units of the ``[-1, 1]`` range's half).
    Every draw comes from ``generator``, and the number of draws does not depend on the values drawn.
    """
    batch = frames.shape[0]
    rounds = torch.randint(0, round_trips_max + 1, (batch,), generator=generator)  # (B,)
    sigmas = torch.rand(batch, generator=generator) * blur_max  # (B,) pixels
    gain = 1 + colour_std * torch.randn(batch, 3, 1, 1, generator=generator)  # (B, 3, 1, 1)
    offset = colour_std * torch.randn(batch, 3, 1, 1, generator=generator)  # (B, 3, 1, 1)
    out = frames.float().clone()
    if round_trip is not None:
        for k in range(1, int(rounds.max()) + 1):
            pick = rounds >= k  # (B,) frames that still take a round trip
            out[pick] = round_trip(out[pick]).float().clamp(-1, 1)
    for i, sigma in enumerate(sigmas.tolist()):
        if sigma > 0.05:  # below that a 3-tap kernel is the identity to float precision
            radius = max(1, math.ceil(3 * sigma))
            out[i] = TF.gaussian_blur(out[i], [2 * radius + 1, 2 * radius + 1], [sigma, sigma])
    out = out * gain.to(out.device) + offset.to(out.device)
    return out.clamp(-1, 1).to(frames.dtype)
