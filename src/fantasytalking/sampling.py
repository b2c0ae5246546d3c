"""Flow-matching Euler sampling with FantasyTalking's dual guidance (FANTASYTALKING.md 3.6-3.7).

The sampler never imports a network: it takes a callable. Schedules and the guidance combination
are plain functions, so they can be tested by hand and reused with any model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

#: ``model_fn(latents, timestep, step_index) -> velocity``; latents ``(B, C, F, H, W)``, timestep ``(B,)``.
ModelFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
#: ``predict(latents, timestep, pass_name) -> velocity`` with pass_name in ``full | no_audio | uncond``.
PassFn = Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor]
#: ``predict(latents, timestep, pass_names) -> {pass_name: velocity}``: several passes in one call (one batch).
BatchedPassFn = Callable[[torch.Tensor, torch.Tensor, tuple[str, ...]], dict[str, torch.Tensor]]


def flow_match_sigmas(steps: int, shift: float = 5.0) -> torch.Tensor:
    """Noise levels of the release: ``s = linspace(1, 0, steps + 1)[:-1]``, ``sigma = shift*s / (1 + (shift-1)*s)``.

    Returns:
        ``(steps + 1,)`` float64 sigmas, the last one 0 (the clean sample).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[:-1]
    sigmas = shift * s / (1 + (shift - 1) * s)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def timesteps_from_sigmas(sigmas: torch.Tensor, num_train_timesteps: int = 1000) -> torch.Tensor:
    """``timestep = 1000 * sigma`` for every step (the final 0 excluded)."""
    return sigmas[:-1] * num_train_timesteps


def combine_guidance(
    full: torch.Tensor,
    no_audio: torch.Tensor | None,
    uncond: torch.Tensor | None,
    prompt_cfg: float,
    audio_cfg: float,
) -> torch.Tensor:
    """``e = e_uncond + prompt_cfg * (e_noaudio - e_uncond) + audio_cfg * (e_full - e_noaudio)``.

    With ``prompt_cfg == 1`` the first term cancels and ``uncond`` may be None (two passes); with
    ``no_audio`` None the audio is guided with the prompt: ``e_uncond + prompt_cfg * (e_full - e_uncond)``.
    """
    if no_audio is None:
        if uncond is None:
            return full
        return uncond + prompt_cfg * (full - uncond)
    if uncond is None:
        if prompt_cfg != 1:
            raise ValueError("uncond is needed when prompt_cfg != 1")
        return no_audio + audio_cfg * (full - no_audio)
    return uncond + prompt_cfg * (no_audio - uncond) + audio_cfg * (full - no_audio)


@dataclass(frozen=True)
class GuidanceConfig:
    """Dual guidance settings.

    Attributes:
        prompt_cfg: text (and, with the negative prompt, everything but the image) guidance scale.
        audio_cfg: audio guidance scale.
        audio_steps: ``(first, last)`` step indices (inclusive, 0-based) with separate audio guidance;
            None for all steps. Outside the range the audio stays in the condition and is guided with
            the prompt (two passes). The authors advise keeping it on for at least 70% of the steps.
    """

    prompt_cfg: float = 5.0
    audio_cfg: float = 5.0
    audio_steps: tuple[int, int] | None = None

    def audio_guided(self, step: int) -> bool:
        return self.audio_steps is None or self.audio_steps[0] <= step <= self.audio_steps[1]

    def passes(self, step: int) -> tuple[str, ...]:
        """Which transformer passes a step needs."""
        if not self.audio_guided(step):
            return ("full",) if self.prompt_cfg == 1 else ("full", "uncond")
        if self.prompt_cfg == 1:
            return ("full", "no_audio")
        return ("full", "no_audio", "uncond")


def guided_model_fn(
    predict: PassFn | None, guidance: GuidanceConfig, *, predict_batched: BatchedPassFn | None = None
) -> ModelFn:
    """Turn a per-pass predictor (or one that runs several passes as one batch) into the guided ``model_fn``."""
    if (predict is None) == (predict_batched is None):
        raise ValueError("give exactly one of predict and predict_batched")

    def model_fn(latents: torch.Tensor, timestep: torch.Tensor, step: int) -> torch.Tensor:
        passes = guidance.passes(step)
        if predict_batched is not None:
            out = predict_batched(latents, timestep, passes)
        else:
            out = {name: predict(latents, timestep, name) for name in passes}
        return combine_guidance(
            out["full"], out.get("no_audio"), out.get("uncond"), guidance.prompt_cfg, guidance.audio_cfg
        )

    return model_fn


def sample_euler(
    model_fn: ModelFn,
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    num_train_timesteps: int = 1000,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Flow-matching Euler: ``x <- x + (sigma_next - sigma) * v`` for each step.

    Args:
        model_fn: velocity predictor, see :data:`ModelFn`.
        latents: ``(B, C, F, H, W)`` initial noise (fp32 keeps the integration exact).
        sigmas: ``(steps + 1,)`` from :func:`flow_match_sigmas`.
        callback: called as ``callback(step, latents)`` after every step.

    Returns:
        the denoised latents, in the dtype of ``latents``.
    """
    x = latents
    for step in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[step]), float(sigmas[step + 1])
        timestep = torch.full((x.shape[0],), sigma * num_train_timesteps, device=x.device, dtype=torch.float32)
        velocity = model_fn(x, timestep, step)
        x = (x.float() + (sigma_next - sigma) * velocity.float()).to(latents.dtype)
        if callback is not None:
            callback(step, x)
    return x
