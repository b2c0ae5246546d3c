"""Face detection, landmarks, lip masks, crops and alignment on a real portrait (skimage's astronaut), offline."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from skimage.data import astronaut

from fantasytalking.errors import InputError
from fantasytalking.face import (
    LIP_OUTER,
    CropBox,
    DlibLandmarker,
    NoFaceError,
    align_face,
    box_from_landmarks,
    clip_crop_box,
    crop_frames,
    detect_face_landmarks,
    dlib_model_path,
    landmarks_to_crop,
    lip_mask,
    track_face,
)


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return astronaut()  # (512, 512, 3) uint8, one face around x 180-270, y 85-175


@pytest.fixture(scope="module")
def dlib_backend() -> DlibLandmarker:
    return DlibLandmarker()


@pytest.fixture(scope="module")
def found(portrait, dlib_backend):
    return detect_face_landmarks(portrait, dlib_backend)


def test_model_files_found_without_pkg_resources():
    path = dlib_model_path("shape_predictor_68_face_landmarks.dat")
    assert path.is_file() and path.stat().st_size > 1_000_000
    # face_recognition_models' own __init__ imports the deprecated pkg_resources: it must never run
    code = (
        "import sys; from fantasytalking.face import DlibLandmarker, DlibFaceEncoder; DlibLandmarker(); "
        "DlibFaceEncoder(); print('pkg_resources' in sys.modules, 'face_recognition_models' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_dlib_finds_one_face_with_68_landmarks_inside_the_box(portrait, dlib_backend, found):
    faces = dlib_backend.detect(portrait)
    assert len(faces) == 1
    box, lm = found
    assert 60 < box.width < 140 and 60 < box.height < 140
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    # every landmark lies in the detector box, loosened by 15% (the jaw line reaches slightly past it)
    pad = 0.15 * box.width
    assert (lm[:, 0] >= box.x0 - pad).all() and (lm[:, 0] <= box.x1 + pad).all()
    assert (lm[:, 1] >= box.y0 - pad).all() and (lm[:, 1] <= box.y1 + pad).all()
    # anatomy: eyes above the nose tip above the mouth above the chin
    assert lm[36:48, 1].mean() < lm[30, 1] < lm[48:60, 1].mean() < lm[8, 1]


def test_detection_works_on_a_large_downscaled_frame(portrait, dlib_backend, found):
    big = np.kron(portrait, np.ones((3, 3, 1), dtype=np.uint8))  # 1536 px: detection runs on a 640 px copy
    _, lm = detect_face_landmarks(big, dlib_backend)
    assert np.abs(lm / 3 - found[1]).mean() < 3.0


def test_no_face_is_a_clear_error(dlib_backend):
    rng = np.random.default_rng(0)
    noise = (rng.random((256, 256, 3)) * 255).astype(np.uint8)
    with pytest.raises(NoFaceError, match="no face found") as err:
        detect_face_landmarks(noise, dlib_backend)
    assert isinstance(err.value, InputError) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="uint8"):
        detect_face_landmarks(noise.astype(np.float32), dlib_backend)


def test_lip_mask_covers_the_mouth_and_nothing_far_away(found):
    _, lm = found
    mask = lip_mask(lm, 512, 512)  # (1, 512, 512)
    assert mask.shape == (1, 512, 512) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    lips = lm[list(LIP_OUTER)]
    cx, cy = lips.mean(0).round().astype(int)
    assert mask[0, cy, cx] == 1  # the mouth centre
    ys, xs = np.nonzero(mask[0])
    mouth_w = np.linalg.norm(lm[54] - lm[48])
    # nothing farther than the margin (15% of the mouth width) plus a pixel from the lip polygon's box
    margin = 0.15 * mouth_w + 2
    assert xs.min() >= lips[:, 0].min() - margin and xs.max() <= lips[:, 0].max() + margin
    assert ys.min() >= lips[:, 1].min() - margin and ys.max() <= lips[:, 1].max() + margin
    # eyes and nose tip are outside
    for idx in (36, 45, 30, 8):
        x, y = lm[idx].round().astype(int)
        assert mask[0, y, x] == 0
    # a bigger margin grows the mask; stacked frames give one mask each
    wider = lip_mask(np.stack([lm, lm]), 512, 512, margin=0.5)
    assert wider.shape == (2, 512, 512) and wider[0].sum() > mask[0].sum()
    assert (wider[0] >= mask[0]).all()


def test_crop_box_contains_the_face_and_is_stable(portrait, found):
    _, lm = found
    frames = np.stack([portrait] * 3)
    moving = np.stack([lm, lm + np.array([6, 0]), lm + np.array([0, -5])]).astype(np.float32)  # (3, 68, 2)
    box = clip_crop_box(moving, (512, 512))
    assert isinstance(box, CropBox) and box.contains(moving)
    assert box.x0 >= 0 and box.x1 <= 512 and box.y0 >= 0 and box.y1 <= 512
    face = box_from_landmarks(lm)
    assert box.side >= 2 * max(face.width, face.height)
    crops = crop_frames(frames, box, 128)
    assert crops.shape == (3, 128, 128, 3) and crops.dtype == np.uint8
    inside = landmarks_to_crop(moving, box, 128)
    assert (inside >= 0).all() and (inside <= 128).all()
    # a face near the border: the box shifts inside the frame instead of leaving it
    edge = clip_crop_box(lm - np.array([170, 70]), (512, 512))
    assert edge.x0 == 0 and edge.y0 == 0


def test_track_follows_the_face_and_reports_missed_frames(portrait, dlib_backend):
    blank = np.full_like(portrait, 128)
    shifted = np.roll(portrait, 8, axis=1)
    track = track_face(np.stack([portrait, shifted, blank]), dlib_backend)
    assert track.landmarks.shape == (3, 68, 2) and track.boxes.shape == (3, 4)
    assert track.detected.tolist() == [True, True, False]
    assert track.missing_fraction == pytest.approx(1 / 3)
    assert 4 < (track.landmarks[1] - track.landmarks[0])[:, 0].mean() < 12  # followed the 8 px shift
    with pytest.raises(NoFaceError):
        track_face(np.stack([blank, blank]), dlib_backend)


def test_aligned_face_crop(portrait, found):
    _, lm = found
    face = align_face(portrait, lm, 112)
    assert face.shape == (112, 112, 3) and face.dtype == np.uint8
    # the crop shows a face: dlib finds it again, with the eyes near the ArcFace template positions
    big = np.asarray(Image.fromarray(face).resize((224, 224)))
    _, lm2 = detect_face_landmarks(big, DlibLandmarker(upsample=1))
    eyes = np.stack([lm2[36:42].mean(0), lm2[42:48].mean(0)]) / 2
    assert np.abs(eyes - [[38.3, 51.7], [73.5, 51.5]]).max() < 6
    assert align_face(portrait, lm, 224).shape == (224, 224, 3)
