"""Identity encoders (dlib offline, ArcFace from a user file) and the face-alignment backend's weight handling."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from skimage.data import astronaut

from fantasytalking.errors import InputError, WeightsError
from fantasytalking.face import (
    FACE_ALIGNMENT_FILES,
    ArcFaceEncoder,
    DlibFaceEncoder,
    DlibLandmarker,
    FaceAlignmentLandmarker,
    FaceEncoder,
    detect_face_landmarks,
    face_alignment_weights_present,
    make_face_encoder,
    make_landmarker,
)


@pytest.fixture(scope="module")
def portrait_landmarks():
    img = astronaut()
    _, lm = detect_face_landmarks(img, DlibLandmarker())
    return img, lm


def test_dlib_embedding_is_128d_and_identity_stable(portrait_landmarks):
    img, lm = portrait_landmarks
    enc = DlibFaceEncoder()
    assert isinstance(enc, FaceEncoder) and enc.dim == 128
    a = enc.encode(img, lm)
    assert a.shape == (128,) and a.dtype == np.float32 and np.isfinite(a).all()
    # the same person, a little brighter and shifted: dlib's "same person" distance is below 0.6
    brighter = np.clip(img.astype(np.int16) + 25, 0, 255).astype(np.uint8)
    b = enc.encode(np.roll(brighter, 5, axis=1), lm + np.array([5, 0]))
    assert np.linalg.norm(a - b) < 0.3
    with pytest.raises(InputError):
        enc.encode(img, lm[:10])


class _TinyArcFace(torch.nn.Module):
    """A stand-in with ArcFace's interface: (B, 3, 112, 112) in [-1, 1] -> (B, 16)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 8, stride=8)
        self.fc = torch.nn.Linear(4 * 14 * 14, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


def test_arcface_encoder_loads_a_user_torchscript_module(tmp_path, portrait_landmarks):
    img, lm = portrait_landmarks
    torch.manual_seed(0)
    path = tmp_path / "arcface.pt"
    torch.jit.script(_TinyArcFace()).save(str(path))
    enc = ArcFaceEncoder(path)
    assert enc.dim == 16
    emb = enc.encode(img, lm)
    assert emb.shape == (16,) and np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)
    assert make_face_encoder(f"arcface:{path}").dim == 16


def test_arcface_errors_are_one_clear_line(tmp_path):
    with pytest.raises(WeightsError, match="ArcFace model file not found") as err:
        ArcFaceEncoder(tmp_path / "missing.pt")
    assert "\n" not in str(err.value)
    state = tmp_path / "state.pt"
    torch.save(_TinyArcFace().state_dict(), state)
    with pytest.raises(WeightsError, match="state dict, not a model"):
        ArcFaceEncoder(state)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="cannot load the ArcFace model"):
        ArcFaceEncoder(junk)
    with pytest.raises(InputError, match="unknown face encoder"):
        make_face_encoder("insightface")


def test_face_alignment_missing_weights_name_the_files(tmp_path):
    assert not face_alignment_weights_present(tmp_path)
    with pytest.raises(WeightsError) as err:
        FaceAlignmentLandmarker(hub_dir=tmp_path, allow_download=False)
    msg = str(err.value)
    assert "\n" not in msg and "dlib" in msg
    for name, url in FACE_ALIGNMENT_FILES.items():
        assert name in msg and url in msg and str(tmp_path / "checkpoints" / name) in msg
    # auto picks the offline backend when face-alignment's weights are absent
    assert make_landmarker("auto", hub_dir=tmp_path).name.startswith("dlib")


def test_face_alignment_download_failure_is_a_weights_error(tmp_path, monkeypatch):
    # the real code path downloads through torch.hub: make that fail as it does without a network
    import face_alignment.utils

    def offline(url, *args, **kwargs):
        raise OSError(f"<urlopen error [Errno -2] Name or service not known> for {url}")

    monkeypatch.setattr(face_alignment.utils, "download_url_to_file", offline)
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError, match="cannot load the face-alignment weights") as err:
        FaceAlignmentLandmarker(hub_dir=tmp_path)
    assert "2DFAN4-11f355bf06.pth.tar" in str(err.value) and "\n" not in str(err.value)


_FA_SCRIPT = """
import sys, numpy as np, torch
from face_alignment.detection.sfd.net_s3fd import s3fd
from face_alignment.models import FAN
from skimage.data import astronaut
from fantasytalking.face import FaceAlignmentLandmarker, FaceBox, face_alignment_weights_present, make_landmarker
hub = sys.argv[1]
torch.set_num_threads(1)  # no OpenMP spinning when the machine is busy
torch.manual_seed(0)
torch.save(FAN(4).state_dict(), hub + "/checkpoints/2DFAN4-11f355bf06.pth.tar")
torch.save(s3fd().state_dict(), hub + "/checkpoints/s3fd-619a316812.pth")
assert face_alignment_weights_present(hub)
backend = make_landmarker("auto", hub_dir=hub)
assert isinstance(backend, FaceAlignmentLandmarker)
lm = backend.landmarks(astronaut(), FaceBox(179, 83, 267, 171))
assert lm.shape == (68, 2) and np.isfinite(lm).all()
print("ok", lm.shape)
"""


def test_face_alignment_real_code_path_with_local_weights(tmp_path):
    """With weight files in place (random ones: the real files cannot be downloaded in this sandbox) the backend
    builds face-alignment's own S3FD and FAN and returns (68, 2) landmarks.

    Runs in a subprocess with numba's JIT off: face-alignment compiles its heatmap decoder with numba on first
    use, about 15 s on this CPU, which is its own one-time cost and not what this test checks.
    """
    (tmp_path / "checkpoints").mkdir()
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    run = subprocess.run([sys.executable, "-c", _FA_SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[0] == "ok"


def _layout_image(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A drawn head: background (10, 20, 30), hair band (200, 40, 40) above a skin face (220, 180, 150), shirt
    (40, 160, 60) on the bottom rows; landmarks spread over the face box (brows to chin)."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = (10, 20, 30)
    img[14:34, 28:68] = (200, 40, 40)
    img[34:72, 28:68] = (220, 180, 150)
    img[80:, 16:80] = (40, 160, 60)
    grid = np.linspace(0.0, 1.0, 68)
    landmarks = np.stack([28 + 40 * grid, 34 + 38 * grid[::-1]], axis=1)  # (68, 2) in the box x 28-68, y 34-72
    return img, landmarks


def test_head_thumbnail_keeps_the_colour_layout_of_the_whole_head():
    from fantasytalking.face import HeadThumbnailEncoder

    img, lm = _layout_image()
    enc = make_face_encoder("head")
    assert isinstance(enc, HeadThumbnailEncoder) and isinstance(enc, FaceEncoder)
    assert enc.dim == 3 * 8 * 8 and enc.name == "head-thumbnail-8x8"
    v = enc.encode(img, lm)
    assert v.shape == (enc.dim,) and v.dtype == np.float32 and v.min() >= 0 and v.max() <= 1
    thumb = v.reshape(8, 8, 3) * 255
    # the square spans 2.2 x 40 = 88 px around the box centre (48, 53): hair in the top rows' middle, the face's
    # skin in the middle, the shirt at the bottom, the background in the top corners (repeated edge beyond)
    assert np.allclose(thumb[0, 0], (10, 20, 30), atol=1)
    assert np.abs(thumb[1, 3:5] - (200, 40, 40)).max() < 30
    assert np.abs(thumb[4, 3:5] - (220, 180, 150)).max() < 2
    assert np.abs(thumb[7, 3:5] - (40, 160, 60)).max() < 40
    crop = enc.crop(img, lm)
    assert crop.shape == (88, 88, 3)
    # a shirt of another colour changes the vector; dlib's descriptor of the face would not see it
    other = img.copy()
    other[80:, 16:80] = (60, 60, 200)
    assert np.abs(enc.encode(other, lm) - v).max() > 0.3
    # a face at the image's edge: the square is padded by repeating the edge, same size
    assert enc.crop(img[:, 20:], lm - np.array([20, 0])).shape == (88, 88, 3)
    with pytest.raises(InputError, match="landmarks"):
        enc.encode(img, lm[:10])


def test_face_encoder_specs_concatenate_and_refuse_bad_ones(portrait_landmarks):
    from fantasytalking.face import ConcatFaceEncoder

    img, lm = portrait_landmarks
    enc = make_face_encoder("dlib+head:4")
    assert isinstance(enc, ConcatFaceEncoder) and enc.dim == 128 + 3 * 4 * 4
    assert enc.name == "dlib-resnet-v1+head-thumbnail-4x4"
    v = enc.encode(img, lm)
    assert v.shape == (enc.dim,)
    assert np.array_equal(v[:128], DlibFaceEncoder().encode(img, lm))
    assert np.array_equal(v[128:], make_face_encoder("head:4").encode(img, lm))
    for bad in ("head:0", "head:x", "dlib+", "+head", "clip"):
        with pytest.raises(InputError, match="face encoder"):
            make_face_encoder(bad)
