"""Synthetic talking clips in the training batch format, for smoke runs and tests (no files, no models).

Each clip is a cartoon face on a coloured background whose mouth opens with the loudness of a
syllable-like tone, and whose head sways; a clip is a pure function of ``(seed, index)``. The
samples have every key of the shard datamodule's batches:

==================  ====================  ===========================================
key                 shape                 meaning
==================  ====================  ===========================================
``video``           ``(3, N, H, W)``      frames in ``[-1, 1]``
``audio``           ``(T,)``              16 kHz speech-like tone, ``T = N / fps`` s
``lip_mask``        ``(1, N, H, W)``      1 on the mouth region
``landmarks``       ``(N, 68, 2)``        68-point landmarks in pixels (x, y)
``face``            ``(3, S, S)``         reference face crop (first frame), ``[-1, 1]``
``face_embedding``  ``(E,)``              unit identity vector (stands in for dlib's)
``motion``          ``(2,)``              (face, body) intensities in ``[0, 1]``
``prompt``          ``str``               ``"A person is talking."``
``key``             ``str``               ``synthetic-000042``
==================  ====================  ===========================================
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from fantasytalking.errors import InputError

SAMPLE_RATE = 16_000


class SyntheticTalkingDataset(Dataset):
    """``num_samples`` synthetic clips (see the module docstring); ``identical`` repeats clip 0."""

    def __init__(
        self,
        num_samples: int = 8,
        *,
        num_frames: int = 9,
        size: int = 32,
        fps: int = 23,
        face_size: int = 32,
        face_dim: int = 128,
        seed: int = 0,
        identical: bool = False,
    ) -> None:
        if (num_frames - 1) % 4:
            raise InputError(f"num_frames must be 4k+1 (the VAE's temporal stride), got {num_frames}.")
        if size % 16:
            raise InputError(f"size must be a multiple of 16, got {size}.")
        self.num_samples = num_samples
        self.num_frames = num_frames
        self.size = size
        self.fps = fps
        self.face_size = face_size
        self.face_dim = face_dim
        self.seed = seed
        self.identical = identical

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        index = 0 if self.identical else index
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        n, s = self.num_frames, self.size

        # Speech-like audio: a tone under a few syllable envelopes.
        samples = round(n / self.fps * SAMPLE_RATE)
        t = torch.arange(samples) / SAMPLE_RATE  # (T,)
        centres = torch.rand(4, generator=g) * (n / self.fps)
        widths = 0.03 + 0.05 * torch.rand(4, generator=g)
        envelope = torch.exp(-(((t[:, None] - centres) / widths) ** 2)).sum(dim=1).clamp(max=1.0)  # (T,)
        f0 = 120 + 100 * torch.rand((), generator=g)
        audio = 0.3 * envelope * torch.sin(2 * math.pi * f0 * t) + 0.005 * torch.randn(samples, generator=g)

        # Per frame: mouth opening follows the loudness, the head sways.
        frame_times = torch.arange(n) / self.fps  # (N,)
        opening = envelope[(frame_times * SAMPLE_RATE).long().clamp(max=samples - 1)]  # (N,) in [0, 1]
        sway = 0.06 * s * torch.rand((), generator=g)
        phase = 2 * math.pi * torch.rand((), generator=g)
        cx = s / 2 + sway * torch.sin(2 * math.pi * 0.8 * frame_times + phase)  # (N,)
        cy = torch.full((n,), s * 0.5)
        r = s * (0.26 + 0.04 * torch.rand((), generator=g))

        yy, xx = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")  # (H, W)
        xx, yy = xx[None], yy[None]  # (1, H, W)
        dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]  # (N, H, W)
        face = (dx / r) ** 2 + (dy / (1.25 * r)) ** 2 <= 1
        mouth_w, mouth_h = 0.45 * r, 0.06 * r + 0.3 * r * opening[:, None, None]
        mouth_y = 0.55 * r
        mouth = (dx / mouth_w) ** 2 + ((dy - mouth_y) / mouth_h) ** 2 <= 1
        eyes = ((dx.abs() - 0.4 * r) ** 2 + (dy + 0.3 * r) ** 2) <= (0.12 * r) ** 2

        background = -0.6 + 1.2 * torch.rand(3, generator=g)
        skin = 0.2 + 0.6 * torch.rand(3, generator=g)
        video = background.view(3, 1, 1, 1).expand(3, n, s, s).clone()  # (3, N, H, W)
        video = torch.where(face[None], skin.view(3, 1, 1, 1), video)
        video = torch.where(eyes[None], torch.tensor([-0.9, -0.9, -0.9]).view(3, 1, 1, 1), video)
        video = torch.where(mouth[None], torch.tensor([0.5, -0.7, -0.6]).view(3, 1, 1, 1), video)

        margin = 0.1 * r
        lip_mask = ((dx.abs() <= mouth_w + margin) & ((dy - mouth_y).abs() <= mouth_h + margin)).float()[None]

        landmarks = self._landmarks(cx, cy, r, opening, mouth_y, mouth_w)  # (N, 68, 2)
        crop = int(2 * 1.4 * r)
        x0 = int(cx[0] - crop / 2)
        y0 = int(cy[0] - crop / 2)
        first = F.pad(video[:, 0], (crop, crop, crop, crop), value=0.0)  # (3, H + 2c, W + 2c)
        face_crop = first[:, y0 + crop : y0 + 2 * crop, x0 + crop : x0 + 2 * crop]
        face_crop = F.interpolate(face_crop[None], size=(self.face_size, self.face_size), mode="bilinear",
                                  align_corners=False)[0]  # fmt: skip
        identity = torch.randn(self.face_dim, generator=g)
        face_intensity = (opening.std() * 3).clamp(0, 1)
        body_intensity = (sway / (0.06 * s)).clamp(0, 1)
        return {
            "video": video.clamp(-1, 1),
            "audio": audio.float(),
            "lip_mask": lip_mask,
            "landmarks": landmarks,
            "face": face_crop.clamp(-1, 1),
            "face_embedding": identity / identity.norm(),
            "motion": torch.stack([face_intensity, body_intensity]).float(),
            "prompt": "A person is talking.",
            "key": f"synthetic-{index:06d}",
        }

    @staticmethod
    def _landmarks(cx: torch.Tensor, cy: torch.Tensor, r: torch.Tensor, opening: torch.Tensor, mouth_y: torch.Tensor,
                   mouth_w: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """iBUG 68-point layout, roughly: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67."""
        n = cx.shape[0]
        points = torch.zeros(n, 68, 2)
        jaw = torch.linspace(math.pi, 0, 17)
        points[:, :17, 0] = cx[:, None] + r * torch.cos(jaw)
        points[:, :17, 1] = cy[:, None] + 1.25 * r * torch.sin(jaw) * 0.9
        brows = torch.linspace(-0.6, 0.6, 10)
        points[:, 17:27, 0] = cx[:, None] + r * brows
        points[:, 17:27, 1] = (cy - 0.5 * r)[:, None]
        points[:, 27:36, 0] = cx[:, None] + r * torch.linspace(-0.1, 0.1, 9)
        points[:, 27:36, 1] = cy[:, None] + r * torch.linspace(-0.2, 0.25, 9)
        eye = torch.linspace(0, 2 * math.pi, 7)[:6]
        for k, side in enumerate((-0.4, 0.4)):
            points[:, 36 + 6 * k : 42 + 6 * k, 0] = cx[:, None] + r * (side + 0.12 * torch.cos(eye))
            points[:, 36 + 6 * k : 42 + 6 * k, 1] = cy[:, None] + r * (-0.3 + 0.06 * torch.sin(eye))
        lip = torch.linspace(0, 2 * math.pi, 21)[:20]
        height = 0.06 * r + 0.3 * r * opening  # (N,)
        points[:, 48:68, 0] = cx[:, None] + mouth_w * torch.cos(lip)
        points[:, 48:68, 1] = cy[:, None] + mouth_y + height[:, None] * torch.sin(lip)
        return points


class SyntheticTalkingDataModule(pl.LightningDataModule):
    """Synthetic clips (see :class:`SyntheticTalkingDataset`) as a LightningDataModule.

    ``motion_stats`` (raw intensity -> [0, 1], the format of the shards' ``stats.json``) is the
    identity map here; the training module stores a datamodule's statistics in its motion conditioner.
    """

    motion_stats: dict[str, Any] = {"face": {"p1": 0.0, "p99": 1.0}, "body": {"p1": 0.0, "p99": 1.0}}  # noqa: RUF012

    def __init__(
        self,
        num_samples: int = 8,
        val_samples: int = 0,
        batch_size: int = 2,
        num_frames: int = 9,
        size: int = 32,
        fps: int = 23,
        face_size: int = 32,
        face_dim: int = 128,
        seed: int = 0,
        identical: bool = False,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        common = {"num_frames": num_frames, "size": size, "fps": fps, "face_size": face_size, "face_dim": face_dim,
                  "identical": identical}  # fmt: skip
        self.train_set = SyntheticTalkingDataset(num_samples, seed=seed, **common)
        self.val_set = SyntheticTalkingDataset(val_samples, seed=seed + 1, **common) if val_samples else None
        self.batch_size = batch_size
        self.num_workers = num_workers

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          drop_last=True)  # fmt: skip

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)
