"""Frame-level audio windows (FANTASYTALKING.md section 3.5).

Each latent frame's visual tokens attend only to the audio tokens around the video frames it
stands for. With ``L`` audio tokens, ``N = s*k + 1`` video frames and a VAE temporal stride ``s``
(4 for Wan), there are ``F = (N - 1) / s + 1`` latent frames:

* ``tpf = L / N`` audio tokens per video frame, ``half = int(s * tpf / 2)``;
* the centre of latent frame 0 is token 0; for ``i >= 1`` it is
  ``int((tpf*((i-1)*s+1) + tpf*(i*s+1)) / 2) - 1`` (the middle of the ``s`` video frames it covers);
* range ``i`` is ``[c - half, c + half]`` inclusive; range 0 becomes ``[-(2*half - start_1), start_1]``;
* every range is widened by ``expand`` tokens on both sides.

Tokens outside ``[0, L)`` are zeros; the valid tokens of a window are packed at its START and
their count is the window's key length, so padded keys can be masked by length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fantasytalking.errors import InputError


@dataclass(frozen=True)
class AudioWindows:
    """Token ranges of every latent frame.

    Attributes:
        ranges: ``F`` inclusive ``(start, end)`` token ranges, after widening (may leave ``[0, L)``).
        window_length: tokens per window, ``2 * half + 1 + 2 * expand``.
        key_lengths: valid (in ``[0, L)``) tokens of each window.
        num_tokens: ``L``, the audio sequence length the ranges were made for.
    """

    ranges: tuple[tuple[int, int], ...]
    window_length: int
    key_lengths: tuple[int, ...]
    num_tokens: int

    @property
    def num_latent_frames(self) -> int:
        return len(self.ranges)


def num_latent_frames(num_frames: int, temporal_stride: int = 4) -> int:
    """``F = (N - 1) / s + 1``; ``N`` must be ``s*k + 1``."""
    if num_frames < 1 or (num_frames - 1) % temporal_stride:
        raise InputError(
            f"num_frames={num_frames} is not of the form {temporal_stride}*k+1; use e.g. "
            f"{(max(num_frames - 1, 0) // temporal_stride) * temporal_stride + 1}."
        )
    return (num_frames - 1) // temporal_stride + 1


def frame_windows(num_tokens: int, num_frames: int, *, temporal_stride: int = 4, expand: int = 4) -> AudioWindows:
    """The release's per-latent-frame audio windows for ``num_tokens`` audio tokens and ``num_frames`` frames."""
    latent_frames = num_latent_frames(num_frames, temporal_stride)
    if num_tokens < 1:
        raise InputError("the audio gave no feature tokens; give at least 0.1 s of speech.")
    if latent_frames < 2:
        raise InputError(f"num_frames={num_frames} makes one latent frame; frame-level audio needs at least two.")
    tokens_per_frame = num_tokens / num_frames
    half = int(temporal_stride * tokens_per_frame / 2)

    centres = [0]
    for i in range(1, latent_frames):
        first = tokens_per_frame * ((i - 1) * temporal_stride + 1)  # first video frame of latent frame i
        after = tokens_per_frame * (i * temporal_stride + 1)  # first video frame after it
        centres.append(int((first + after) / 2) - 1)
    ranges = [(c - half, c + half) for c in centres]
    start_1 = ranges[1][0]
    ranges[0] = (-(2 * half - start_1), start_1)
    ranges = [(a - expand, b + expand) for a, b in ranges]

    key_lengths = tuple(max(0, min(b, num_tokens - 1) - max(a, 0) + 1) for a, b in ranges)
    return AudioWindows(
        ranges=tuple(ranges),
        window_length=2 * half + 1 + 2 * expand,
        key_lengths=key_lengths,
        num_tokens=num_tokens,
    )


def gather_windows(tokens: torch.Tensor, windows: AudioWindows) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut ``tokens`` into the windows, valid tokens first and zeros after.

    Args:
        tokens: ``(B, L, C)`` audio tokens; ``L`` must equal ``windows.num_tokens``.
        windows: from :func:`frame_windows`.

    Returns:
        ``(B, F, W, C)`` windows and ``(F,)`` int64 key lengths (on ``tokens.device``).
    """
    batch, length, channels = tokens.shape
    if length != windows.num_tokens:
        raise ValueError(f"windows were made for {windows.num_tokens} audio tokens, got {length}")
    device = tokens.device
    starts = torch.tensor([max(a, 0) for a, _ in windows.ranges], device=device)  # (F,)
    lengths = torch.tensor(windows.key_lengths, device=device, dtype=torch.long)  # (F,)
    offsets = torch.arange(windows.window_length, device=device)  # (W,)
    valid = offsets[None, :] < lengths[:, None]  # (F, W)
    index = (starts[:, None] + offsets[None, :]).clamp(max=length - 1)  # (F, W)
    out = tokens[:, index.reshape(-1)].reshape(batch, len(windows.ranges), windows.window_length, channels)
    out = torch.where(valid[None, :, :, None], out, out.new_zeros(()))  # zeros after the valid tokens: (B, F, W, C)
    return out, lengths
