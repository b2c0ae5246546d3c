"""Every metric takes video FILES as well as tensors: a path gives exactly the result of the decoded tensor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.data import astronaut
from torch import nn

from fantasytalking.io import write_video
from fantasytalking.metrics.video import read_video_file

FPS = 25


class MeanColour(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(dim=-1)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, list]:
    """Two portrait clips with speech (files) and the same clips decoded back to tensors ``(3, F, H, W)``."""
    root = tmp_path_factory.mktemp("paths")
    face = astronaut()[40:296, 96:352]
    t = np.arange(16000 * 10 // FPS) / 16000
    paths, decoded, speech = [], [], []
    for i in range(2):
        frames = np.stack([np.roll(face, s * (i + 1), axis=1) for s in range(10)])  # (10, 256, 256, 3)
        wav = (0.3 * np.sin(2 * np.pi * (180 + 40 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
        path = root / f"clip{i}.mp4"
        write_video(path, frames, FPS, audio=wav, sample_rate=16000)
        video, fps, track, sr = read_video_file(path)
        assert fps == FPS and sr == 16000
        paths.append(path)
        decoded.append(video)
        speech.append(torch.from_numpy(np.asarray(track, np.float32).reshape(-1)))
    return {"paths": paths, "decoded": decoded, "speech": speech}


def _same(a: object, b: object) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b)  # type: ignore[arg-type]
        for k in a:
            _same(a[k], b[k])  # type: ignore[index]
    else:
        assert float(a) == pytest.approx(float(b), rel=1e-6, abs=1e-9)  # type: ignore[arg-type]


def test_fid_fvd_lpips_take_paths(files) -> None:
    from fantasytalking.metrics import FID, FVD, LPIPSVideo

    paths: list[Path] = files["paths"]
    tensors = torch.stack(files["decoded"])  # (2, 3, F, H, W)
    flipped = torch.flip(tensors, dims=[-1])
    for make in (lambda: FID(feature_extractor=MeanColour(), num_features=3),
                 lambda: FVD(feature_extractor=MeanColour(), num_features=3, extractor_kwargs={}, clip_frames=4,
                             size=32)):  # fmt: skip
        by_path, by_tensor = make(), make()
        by_path.update(paths, real=True)
        by_path.update(flipped, real=False)
        by_tensor.update(tensors, real=True)
        by_tensor.update(flipped, real=False)
        _same(by_path.compute(), by_tensor.compute())
    torch.manual_seed(0)
    lp_path = LPIPSVideo(pretrained_backbone=False)
    lp_tensor = LPIPSVideo(network=lp_path.net)
    lp_path.update(paths, [paths[1], paths[0]])
    lp_tensor.update(tensors, tensors[[1, 0]])
    _same(lp_path.compute(), lp_tensor.compute())
    assert float(lp_path.compute()) > 0


def test_sync_identity_dynamics_lipsync_take_paths(files) -> None:
    from fantasytalking.face import DlibLandmarker
    from fantasytalking.metrics import IdentityConsistency, LandmarkLipSync, MotionDynamics, SyncNet, SyncNetScore

    paths: list[Path] = files["paths"]
    tensors = torch.stack(files["decoded"])
    speech = torch.stack(files["speech"])  # (2, S): each file's own track, decoded
    landmarker = DlibLandmarker()
    torch.manual_seed(0)
    net = SyncNet()
    cases = [
        (lambda: SyncNetScore(network=net, landmarker=landmarker, vshift=2),
         lambda m: m.update(paths), lambda m: m.update(tensors, speech, fps=FPS)),
        (lambda: LandmarkLipSync(landmarker=landmarker),
         lambda m: m.update(paths), lambda m: m.update(tensors, speech, fps=FPS)),
        (lambda: MotionDynamics(landmarker=landmarker, fps=FPS),
         lambda m: m.update(paths[0]), lambda m: m.update(tensors[:1])),  # one Path alone, too
        (lambda: IdentityConsistency(landmarker=landmarker, frame_stride=3),
         lambda m: m.update(paths, paths), lambda m: m.update(tensors, tensors[:, :, 0])),
    ]  # fmt: skip
    for make, with_paths, with_tensors in cases:
        a, b = make(), make()
        with_paths(a)
        with_tensors(b)
        _same(a.compute(), b.compute())
