"""Sync-C / Sync-D with SyncNet (Chung & Zisserman, 2016), the ``syncnet_v2.model`` of ``joonson/syncnet_python``.

Pipeline, as in ``SyncNetInstance.evaluate`` (differences are said where they are):

1. video at 25 fps (other rates are resampled by nearest frame, as ``ffmpeg -r 25`` does), audio 16 kHz mono;
2. face crops: ``syncnet_python`` crops around S3FD boxes (half-size ``bs``, ``crop_scale = 0.4``, median-filtered
   over 13 frames); here the boxes come from dlib landmarks (:func:`fantasytalking.face.track_face`), with the
   same crop geometry and filter, resized to 224x224, **3-channel BGR in [0, 255]** (the v2 weights' first layer is
   ``Conv3d(3, 96, (5, 7, 7))``: colour face crops, not grayscale mouth crops);
3. audio: 13 MFCCs at 100 Hz (``python_speech_features.mfcc`` defaults, on int16-scaled samples), windows of
   ``13 x 20`` (0.2 s) aligned with 5-frame video windows (4 MFCC steps per frame);
4. embeddings of every window, then :func:`fantasytalking.metrics.sync.sync_scores` with ``vshift = 15``.

Usage::

    sync = SyncNetScore(syncnet_weights="syncnet_v2.model")
    sync.update(["a.mp4", "b.mp4"])            # audio from the files' own tracks
    sync.update(videos, audio, fps=25.0)        # (B, 3, F, H, W) in [0, 1] + (B, S) at 16 kHz
    sync.compute()                              # {"sync_c": ..., "sync_d": ...} averaged over videos
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric

from fantasytalking.errors import InputError, WeightsError
from fantasytalking.metrics.sync import SyncResult, sync_scores
from fantasytalking.metrics.video import LazyLandmarkerMixin
from fantasytalking.metrics.weights import resolve_weights

__all__ = ["SyncNet", "SyncNetScore", "load_syncnet", "mfcc", "resample_frames", "syncnet_face_crops"]

SYNCNET_FPS = 25
SYNCNET_SR = 16000
WINDOW_FRAMES = 5
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps


def _bn_relu3(c: int) -> list[nn.Module]:
    return [nn.BatchNorm3d(c), nn.ReLU(inplace=True)]


def _bn_relu2(c: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]


class SyncNet(nn.Module):
    """SyncNet v2 (``SyncNetModel.S`` of syncnet_python; parameter names match ``syncnet_v2.model``)."""

    def __init__(self, num_layers_in_fc_layers: int = 1024) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, (3, 3), (1, 1), (1, 1)), *_bn_relu2(64),
            nn.MaxPool2d((1, 1), (1, 1)),
            nn.Conv2d(64, 192, (3, 3), (1, 1), (1, 1)), *_bn_relu2(192),
            nn.MaxPool2d((3, 3), (1, 2)),
            nn.Conv2d(192, 384, (3, 3), padding=(1, 1)), *_bn_relu2(384),
            nn.Conv2d(384, 256, (3, 3), padding=(1, 1)), *_bn_relu2(256),
            nn.Conv2d(256, 256, (3, 3), padding=(1, 1)), *_bn_relu2(256),
            nn.MaxPool2d((3, 3), (2, 2)),
            nn.Conv2d(256, 512, (5, 4), padding=(0, 0)), nn.BatchNorm2d(512), nn.ReLU(),
        )  # fmt: skip
        self.netfcaud = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, num_layers_in_fc_layers)
        )
        self.netfclip = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, num_layers_in_fc_layers)
        )
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0), *_bn_relu3(96),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), *_bn_relu3(256),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), *_bn_relu3(256),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), *_bn_relu3(256),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), *_bn_relu3(256),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(256, 512, (1, 6, 6), padding=0), *_bn_relu3(512),
        )  # fmt: skip

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        """MFCC windows ``(B, 1, 13, 20)`` -> ``(B, 1024)``."""
        return self.netfcaud(self.netcnnaud(x).flatten(1))  # (B, 512) -> (B, 1024)

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        """Face crops ``(B, 3, 5, 224, 224)`` BGR in [0, 255] -> ``(B, 1024)``."""
        return self.netfclip(self.netcnnlip(x).flatten(1))  # (B, 512) -> (B, 1024)


def load_syncnet(weights: str | os.PathLike[str] | None = None, *, download: bool = False) -> SyncNet:
    """SyncNet with ``syncnet_v2.model`` (a plain ``state_dict``), in eval mode, on CPU."""
    path = resolve_weights("syncnet", weights, download=download)
    net = SyncNet()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, nn.Module):  # pragma: no cover - some mirrors pickle the module
            state = state.state_dict()
        net.load_state_dict(state, strict=True)
    except Exception as err:
        raise WeightsError(f"{path} is not a usable syncnet_v2.model ({err}); re-download it") from err
    return net.eval()


# --------------------------------------------------------------------------------------------------- audio


def _hz2mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel2hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mfcc(
    signal: np.ndarray, sample_rate: int = SYNCNET_SR, numcep: int = 13, nfilt: int = 26, nfft: int = 512
) -> np.ndarray:
    """``python_speech_features.mfcc`` with its defaults (25 ms windows every 10 ms, rectangular window,
    pre-emphasis 0.97, lifter 22, c0 replaced by log frame energy), re-implemented in NumPy: ``(S,) -> (T, 13)``."""
    sig = np.asarray(signal, dtype=np.float64).reshape(-1)
    sig = np.append(sig[0], sig[1:] - 0.97 * sig[:-1]) if sig.size else sig
    frame_len, frame_step = round(0.025 * sample_rate), round(0.01 * sample_rate)
    n = 1 if sig.size <= frame_len else 1 + int(np.ceil((sig.size - frame_len) / frame_step))
    pad = np.concatenate([sig, np.zeros((n - 1) * frame_step + frame_len - sig.size)])
    idx = np.arange(frame_len)[None, :] + frame_step * np.arange(n)[:, None]
    frames = pad[idx]  # (T, frame_len)
    pspec = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft  # (T, nfft/2 + 1)
    energy = pspec.sum(1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    mel = np.linspace(_hz2mel(0.0), _hz2mel(sample_rate / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel2hz(mel) / sample_rate)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    feat = pspec @ fb.T
    feat = np.log(np.where(feat == 0, np.finfo(float).eps, feat))  # (T, nfilt)
    from scipy.fft import dct

    cep = dct(feat, type=2, axis=1, norm="ortho")[:, :numcep]
    lift = 1.0 + 11.0 * np.sin(np.pi * np.arange(numcep) / 22.0)  # ceplifter = 22
    cep = cep * lift
    cep[:, 0] = np.log(energy)
    return cep.astype(np.float32)


# --------------------------------------------------------------------------------------------------- video


def resample_frames(frames: np.ndarray, fps: float, target_fps: float = SYNCNET_FPS) -> np.ndarray:
    """Nearest-frame resampling of ``(F, ...)`` from ``fps`` to ``target_fps`` (same duration)."""
    if abs(fps - target_fps) < 1e-6:
        return frames
    count = max(1, int(np.floor(len(frames) * target_fps / fps + 1e-6)))
    idx = np.minimum(np.floor(np.arange(count) * fps / target_fps + 1e-6).astype(int), len(frames) - 1)
    return frames[idx]


def _medfilt(x: np.ndarray, k: int) -> np.ndarray:
    from scipy.signal import medfilt

    return medfilt(x, kernel_size=k) if len(x) >= k else x


def syncnet_face_crops(
    frames: np.ndarray, boxes: np.ndarray, *, crop_scale: float = 0.4, size: int = 224
) -> np.ndarray:
    """``uint8 (F, H, W, 3)`` RGB + face boxes ``(F, 4)`` -> ``float32 (F, size, size, 3)`` BGR crops in [0, 255]
    with syncnet_python's ``crop_video`` geometry (median-filtered box, 0.4 margin, grey 110 padding)."""
    import cv2

    x0, y0, x1, y1 = (boxes[:, i].astype(np.float64) for i in range(4))
    s = _medfilt(np.maximum(x1 - x0, y1 - y0) / 2.0, 13)
    cx, cy = _medfilt((x0 + x1) / 2.0, 13), _medfilt((y0 + y1) / 2.0, 13)
    out = np.empty((len(frames), size, size, 3), np.float32)
    for i, frame in enumerate(frames):
        bs, cs = float(s[i]), crop_scale
        bsi = int(bs * (1 + 2 * cs))
        padded = np.pad(frame[..., ::-1], ((bsi, bsi), (bsi, bsi), (0, 0)), constant_values=110)  # BGR
        my, mx = cy[i] + bsi, cx[i] + bsi
        face = padded[int(my - bs) : int(my + bs * (1 + 2 * cs)), int(mx - bs * (1 + cs)) : int(mx + bs * (1 + cs))]
        out[i] = cv2.resize(np.ascontiguousarray(face), (size, size)).astype(np.float32)
    return out


# --------------------------------------------------------------------------------------------------- metric


class SyncNetScore(LazyLandmarkerMixin, Metric):
    """Sync-C (higher is better) and Sync-D (lower is better) averaged over videos.

    Args:
        syncnet_weights: path to ``syncnet_v2.model``.
        network: a :class:`SyncNet` (e.g. at random weights for tests) instead of loading one.
        landmarker: face backend for the crop boxes (default: offline dlib).
        vshift: offsets searched on each side, in frames.
    """

    higher_is_better = True
    is_differentiable = False
    full_state_update = False
    conf_sum: torch.Tensor
    dist_sum: torch.Tensor
    offset_abs_sum: torch.Tensor
    count: torch.Tensor

    def __init__(
        self,
        syncnet_weights: str | os.PathLike[str] | None = None,
        *,
        network: SyncNet | None = None,
        landmarker: Any = None,
        download: bool = False,
        vshift: int = 15,
        batch_size: int = 20,
        value_range: str = "01",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.net = network if network is not None else load_syncnet(syncnet_weights, download=download)
        self.net.eval()
        self._landmarker = landmarker
        self.vshift = int(vshift)
        self.batch_size = int(batch_size)
        self.value_range = value_range
        for name in ("conf_sum", "dist_sum", "offset_abs_sum"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")


    @torch.no_grad()
    def score_crops(self, crops: np.ndarray, audio: np.ndarray) -> SyncResult:
        """BGR crops ``(F, 224, 224, 3)`` at 25 fps + 16 kHz mono audio ``(S,)`` in [-1, 1] -> :class:`SyncResult`."""
        device = self.conf_sum.device
        cc = mfcc(np.asarray(audio, np.float64) * 32768.0).T  # (13, T), int16 scale as wavfile.read gives
        video = torch.from_numpy(crops).permute(3, 0, 1, 2)[None]  # (1, 3, F, 224, 224)
        mel = torch.from_numpy(cc)[None, None]  # (1, 1, 13, T)
        # usable frames as syncnet_python counts them: min(video frames, floor(samples / 640))
        length = min(video.shape[2], len(audio) // (SYNCNET_SR // SYNCNET_FPS))
        last = length - WINDOW_FRAMES
        if last < 1:
            raise InputError(f"SyncNet needs more than {WINDOW_FRAMES} frames (0.2 s) of video and audio, got {length}")
        v_out, a_out = [], []
        for i in range(0, last, self.batch_size):
            idx = range(i, min(last, i + self.batch_size))
            v = torch.cat([video[:, :, j : j + WINDOW_FRAMES] for j in idx]).to(device)  # (b, 3, 5, 224, 224)
            a = torch.cat([mel[..., j * MFCC_PER_FRAME : (j + WINDOW_FRAMES) * MFCC_PER_FRAME] for j in idx]).to(
                device
            )  # (b, 1, 13, 20): the MFCC frames of the 5 video frames
            v_out.append(self.net.forward_lip(v).cpu())
            a_out.append(self.net.forward_aud(a).cpu())
        return sync_scores(torch.cat(v_out), torch.cat(a_out), self.vshift)

    def score_video(self, frames: np.ndarray, fps: float, audio: np.ndarray) -> SyncResult:
        """``uint8 (F, H, W, 3)`` RGB at ``fps`` + 16 kHz mono audio -> :class:`SyncResult`."""
        from fantasytalking.face import track_face

        frames = resample_frames(frames, fps)
        track = track_face(frames, self.landmarker)
        return self.score_crops(syncnet_face_crops(frames, track.boxes), audio)

    def update(  # type: ignore[override]
        self,
        videos: Any = None,
        audio: torch.Tensor | Sequence[Any] | None = None,
        *,
        fps: float | Sequence[float] = SYNCNET_FPS,
        sample_rate: int = SYNCNET_SR,
        results: Sequence[SyncResult] = (),
    ) -> None:
        """``videos``: ``(B, 3, F, H, W)`` or paths; ``audio``: ``(B, S)`` at ``sample_rate``, paths, or ``None`` to
        use each video file's own audio track. ``fps``: frame rate of tensor videos (files carry their own).
        ``results``: videos already scored (:meth:`score_crops` on crops of your own), added as they are."""
        from fantasytalking.metrics.video import iter_av

        for res in results:
            self._add(res)
        if videos is None:
            return
        for frames, rate, wav in iter_av(
            videos,
            audio,
            fps=fps,
            sample_rate=sample_rate,
            target_sr=SYNCNET_SR,
            value_range=self.value_range,  # type: ignore[arg-type]
        ):
            self._add(self.score_video(frames, rate, wav))

    def _add(self, res: SyncResult) -> None:
        self.conf_sum += res.confidence
        self.dist_sum += res.min_dist
        self.offset_abs_sum += abs(res.offset)
        self.count += 1

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp(min=1).double()
        return {"sync_c": self.conf_sum / n, "sync_d": self.dist_sum / n, "abs_offset": self.offset_abs_sum / n}
