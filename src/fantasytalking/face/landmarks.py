"""Face detection and 68-point landmarks, behind one small protocol with two backends.

Both backends give the iBUG-300W 68-point layout (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, outer lip 48-59,
inner lip 60-67) in pixel ``(x, y)`` coordinates of the image they were given:

* :class:`DlibLandmarker` (offline): dlib's HOG (default) or CNN (MMOD) face detector and its 68-point shape
  predictor, from the files of the ``face_recognition_models`` package (found without ``pkg_resources``).
* :class:`FaceAlignmentLandmarker`: the ``face-alignment`` package (S3FD detector + 2D-FAN-4). Its weights are
  fetched by the package at run time into ``<torch hub dir>/checkpoints``; when that fails (no network) a
  one-line :class:`~fantasytalking.errors.WeightsError` names the two files to fetch and where to put them.

Images are ``uint8 (H, W, 3)`` RGB everywhere.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from fantasytalking.errors import InputError, WeightsError

__all__ = [
    "FACE_ALIGNMENT_FILES",
    "JAW",
    "LEFT_EYE",
    "LIP_INNER",
    "LIP_OUTER",
    "NOSE_TIP",
    "NUM_LANDMARKS",
    "RIGHT_EYE",
    "DlibLandmarker",
    "FaceAlignmentLandmarker",
    "FaceBox",
    "LandmarkBackend",
    "NoFaceError",
    "as_rgb_uint8",
    "box_from_landmarks",
    "detect_face_landmarks",
    "dlib_model",
    "dlib_model_path",
    "face_alignment_weights_present",
    "make_landmarker",
]

#: Number of points in the iBUG 68-point layout.
NUM_LANDMARKS = 68
#: Index groups of the 68-point layout (subject's right eye is on the image's left).
JAW = tuple(range(0, 17))
RIGHT_EYE = tuple(range(36, 42))
LEFT_EYE = tuple(range(42, 48))
NOSE_TIP = 30
LIP_OUTER = tuple(range(48, 60))
LIP_INNER = tuple(range(60, 68))

#: face-alignment's weight files (name in ``<torch hub dir>/checkpoints`` -> download address).
FACE_ALIGNMENT_FILES = {
    "2DFAN4-11f355bf06.pth.tar": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    "s3fd-619a316812.pth": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}

Backend = Literal["auto", "dlib", "face-alignment"]


class NoFaceError(InputError):
    """No face was found where one was needed (an image, or every frame of a clip)."""


# --------------------------------------------------------------------------------------------------- boxes


@dataclass(frozen=True)
class FaceBox:
    """An axis-aligned face box in pixels, ``[x0, x1) x [y0, y1)``, with the detector's score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0

    def scaled(self, factor: float) -> FaceBox:
        """The box in an image resized by ``factor`` (coordinates multiplied)."""
        return FaceBox(self.x0 * factor, self.y0 * factor, self.x1 * factor, self.y1 * factor, self.score)

    def as_array(self) -> np.ndarray:
        """``float32 (4,)``: x0, y0, x1, y1."""
        return np.array([self.x0, self.y0, self.x1, self.y1], dtype=np.float32)

    def iou(self, other: FaceBox) -> float:
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


def box_from_landmarks(landmarks: np.ndarray) -> FaceBox:
    """Tight box around 68 landmarks ``(68, 2)``."""
    pts = np.asarray(landmarks, dtype=np.float64)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return FaceBox(float(x0), float(y0), float(x1), float(y1))


# --------------------------------------------------------------------------------------------------- helpers


def as_rgb_uint8(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Check an image is ``uint8 (H, W, 3)`` (grey ``(H, W)`` is expanded); returns a C-contiguous array."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"{what} must be an RGB array of shape (H, W, 3), got {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        raise InputError(f"{what} must be uint8 (0..255), got {arr.dtype}; convert it first")
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise InputError(f"{what} is too small ({arr.shape[1]}x{arr.shape[0]} px) to hold a face")
    return np.ascontiguousarray(arr)


def _downscale(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Shrink so the longest side is at most ``max_side`` (detection is the slow part); returns ``(img, factor)``."""
    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image, 1.0
    factor = max_side / max(h, w)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    return small, size[0] / w


def dlib_model_path(name: str) -> Path:
    """Path of one of ``face_recognition_models``' dlib files (e.g. ``shape_predictor_68_face_landmarks.dat``).

    Located through ``importlib`` (no ``pkg_resources`` import, which is deprecated and slow).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            "the dlib face models are not installed: pip install face_recognition_models dlib-bin "
            "(or use the face-alignment backend)"
        )
    for root in spec.submodule_search_locations:
        path = Path(root) / "models" / name
        if path.is_file():
            return path
    raise WeightsError(f"dlib model file {name} is missing from face_recognition_models; reinstall that package")


@functools.cache
def dlib_model(kind: Literal["shape68", "cnn", "recognition"]) -> Any:
    """The loaded dlib model of one kind, loaded once per process (the 68-point predictor takes about 0.5 s)."""
    import dlib

    if kind == "shape68":
        return dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))
    if kind == "cnn":
        return dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod_human_face_detector.dat")))
    if kind == "recognition":
        return dlib.face_recognition_model_v1(str(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")))
    raise ValueError(f"unknown dlib model kind {kind!r}")


# --------------------------------------------------------------------------------------------------- protocol


@runtime_checkable
class LandmarkBackend(Protocol):
    """What the face track needs from a landmark model.

    ``detect`` returns the faces of an RGB image, largest first; ``landmarks`` returns ``float32 (68, 2)`` pixel
    ``(x, y)`` for the face in ``box``. ``name`` is recorded in each clip's ``meta.json``.
    """

    name: str

    def detect(self, image: np.ndarray) -> list[FaceBox]: ...

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray: ...


def _sorted_faces(boxes: Sequence[FaceBox]) -> list[FaceBox]:
    return sorted(boxes, key=lambda b: b.area, reverse=True)


# --------------------------------------------------------------------------------------------------- dlib


class DlibLandmarker:
    """dlib face detector + 68-point shape predictor (offline; about 20 ms a 512 px frame with HOG).

    Args:
        detector: ``"hog"`` (frontal HOG + linear SVM, fast) or ``"cnn"`` (MMOD CNN, slower on CPU, more robust
            to pose).
        upsample: times the detector upsamples the image (finds faces smaller than about 80 px, slower).
        max_side: detection runs on a copy whose longest side is at most this (boxes are mapped back); landmarks
            always use the full image.
        min_score: detections scoring at or below this are dropped (HOG: SVM margin; CNN: confidence).
    """

    name = "dlib"

    def __init__(
        self,
        detector: Literal["hog", "cnn"] = "hog",
        *,
        upsample: int = 0,
        max_side: int | None = 640,
        min_score: float = 0.0,
    ) -> None:
        import dlib

        if detector not in ("hog", "cnn"):
            raise InputError(f"dlib detector must be 'hog' or 'cnn', got {detector!r}")
        self.detector_kind = detector
        self.upsample = int(upsample)
        self.max_side = max_side
        self.min_score = float(min_score)
        self.name = f"dlib-{detector}"
        self._detector: Any = dlib.get_frontal_face_detector() if detector == "hog" else dlib_model("cnn")
        self._predictor = dlib_model("shape68")
        self._dlib = dlib

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        img = as_rgb_uint8(image)
        small, factor = _downscale(img, self.max_side)
        boxes: list[FaceBox] = []
        if self.detector_kind == "hog":
            rects, scores, _ = self._detector.run(small, self.upsample, self.min_score)
            for r, s in zip(rects, scores):
                if s > self.min_score:
                    boxes.append(FaceBox(r.left(), r.top(), r.right() + 1, r.bottom() + 1, float(s)))
        else:
            for det in self._detector(small, self.upsample):
                r = det.rect
                if det.confidence > self.min_score:
                    boxes.append(FaceBox(r.left(), r.top(), r.right() + 1, r.bottom() + 1, float(det.confidence)))
        return _sorted_faces([b.scaled(1.0 / factor) for b in boxes])

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        img = as_rgb_uint8(image)
        rect = self._dlib.rectangle(round(box.x0), round(box.y0), round(box.x1) - 1, round(box.y1) - 1)
        shape = self._predictor(img, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)  # (68, 2)

    def full_object_detection(self, landmarks: np.ndarray) -> Any:
        """A ``dlib.full_object_detection`` from ``(68, 2)`` landmarks (for dlib's face embedding)."""
        pts = np.asarray(landmarks, dtype=np.float64)
        box = box_from_landmarks(pts)
        rect = self._dlib.rectangle(round(box.x0), round(box.y0), round(box.x1), round(box.y1))
        return self._dlib.full_object_detection(rect, [self._dlib.point(round(x), round(y)) for x, y in pts])


# --------------------------------------------------------------------------------------------------- face-alignment

_HUB_LOCK = threading.Lock()


@contextlib.contextmanager
def _torch_hub_dir(path: Path | None) -> Iterator[None]:
    """Point ``torch.hub`` (where face-alignment looks for and downloads weights) at ``path`` for a moment."""
    if path is None:
        yield
        return
    import torch

    with _HUB_LOCK:
        previous = torch.hub.get_dir()
        torch.hub.set_dir(str(path))
        try:
            yield
        finally:
            torch.hub.set_dir(previous)


def _face_alignment_checkpoints(hub_dir: str | os.PathLike[str] | None) -> Path:
    import torch

    return Path(hub_dir if hub_dir is not None else torch.hub.get_dir()) / "checkpoints"


def face_alignment_weights_present(hub_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether both face-alignment weight files are already in ``<hub_dir>/checkpoints`` (no download needed)."""
    folder = _face_alignment_checkpoints(hub_dir)
    return all((folder / name).is_file() for name in FACE_ALIGNMENT_FILES)


class FaceAlignmentLandmarker:
    """The ``face-alignment`` package: S3FD face detector and 2D-FAN-4 68-point landmarks (PyTorch).

    Args:
        device: torch device string for both networks (from the caller; CPU works, slowly).
        hub_dir: torch hub folder whose ``checkpoints/`` holds (or receives) the weight files; default
            ``torch.hub.get_dir()`` (``$TORCH_HOME/hub``, usually ``~/.cache/torch/hub``).
        allow_download: let face-alignment download missing weights (its normal behaviour); when false, missing
            files raise at once.
        flip_input: average the prediction with the horizontally flipped image's (face-alignment's default).
        detector_threshold: S3FD score below which a detection is dropped.
        max_side: detection runs on a copy whose longest side is at most this.

    Raises:
        WeightsError: the weights are missing and could not be fetched; the message names each file, its
            address and the folder to put it in.
    """

    name = "face-alignment"

    def __init__(
        self,
        device: str = "cpu",
        *,
        hub_dir: str | os.PathLike[str] | None = None,
        allow_download: bool = True,
        flip_input: bool = True,
        detector_threshold: float = 0.5,
        max_side: int | None = 640,
    ) -> None:
        import face_alignment

        folder = _face_alignment_checkpoints(hub_dir)
        missing = [name for name in FACE_ALIGNMENT_FILES if not (folder / name).is_file()]
        hint = "; ".join(f"{FACE_ALIGNMENT_FILES[n]} -> {folder / n}" for n in missing)
        if missing and not allow_download:
            raise WeightsError(f"face-alignment weights are missing: fetch {hint} (or use the dlib landmark backend)")
        self.max_side = max_side
        detector_file = folder / "s3fd-619a316812.pth"
        kwargs: dict[str, Any] = {"filter_threshold": float(detector_threshold)}
        if detector_file.is_file():
            kwargs["path_to_detector"] = str(detector_file)
        try:
            with _torch_hub_dir(Path(hub_dir) if hub_dir is not None else None):
                self._fa = face_alignment.FaceAlignment(
                    face_alignment.LandmarksType.TWO_D,
                    device=str(device),
                    flip_input=flip_input,
                    face_detector="sfd",
                    face_detector_kwargs=kwargs,
                    compile=False,
                )
        except Exception as err:  # URLError / OSError (no network), or a corrupt partial download
            reason = " ".join(str(err).split()) or type(err).__name__
            still = [n for n in FACE_ALIGNMENT_FILES if not (folder / n).is_file()] or list(FACE_ALIGNMENT_FILES)
            fetch = "; ".join(f"{FACE_ALIGNMENT_FILES[n]} -> {folder / n}" for n in still)
            raise WeightsError(
                f"cannot load the face-alignment weights ({reason}): fetch {fetch} (or use the dlib landmark backend)"
            ) from None

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        img = as_rgb_uint8(image)
        small, factor = _downscale(img, self.max_side)
        found = self._fa.face_detector.detect_from_image(small.copy())
        boxes = [FaceBox(float(d[0]), float(d[1]), float(d[2]), float(d[3]), float(d[4])) for d in found]
        return _sorted_faces([b.scaled(1.0 / factor) for b in boxes])

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        img = as_rgb_uint8(image)
        out = self._fa.get_landmarks_from_image(img, detected_faces=[[box.x0, box.y0, box.x1, box.y1, box.score]])
        if not out:
            raise InputError("face-alignment returned no landmarks for the given face box")
        return np.asarray(out[0], dtype=np.float32)[:, :2]  # (68, 2)


# --------------------------------------------------------------------------------------------------- factory


def make_landmarker(
    backend: Backend = "auto",
    *,
    device: str = "cpu",
    detector: Literal["hog", "cnn"] = "hog",
    hub_dir: str | os.PathLike[str] | None = None,
    max_side: int | None = 640,
) -> LandmarkBackend:
    """Build a landmark backend by name.

    ``"auto"`` is face-alignment when both of its weight files are already in the torch hub cache (``hub_dir``),
    else dlib (offline); ``"face-alignment"`` may download its weights; ``"dlib"`` never touches the network.
    """
    if backend == "auto":
        backend = "face-alignment" if face_alignment_weights_present(hub_dir) else "dlib"
    if backend == "dlib":
        return DlibLandmarker(detector, max_side=max_side)
    if backend == "face-alignment":
        return FaceAlignmentLandmarker(device, hub_dir=hub_dir, max_side=max_side)
    raise InputError(f"unknown landmark backend {backend!r}; use 'auto', 'dlib' or 'face-alignment'")


def detect_face_landmarks(image: np.ndarray, backend: LandmarkBackend | None = None) -> tuple[FaceBox, np.ndarray]:
    """The largest face of an RGB image and its ``float32 (68, 2)`` landmarks.

    Raises :class:`NoFaceError` (an :class:`InputError`) when no face is found.
    """
    img = as_rgb_uint8(image)
    model = backend if backend is not None else DlibLandmarker()
    faces = model.detect(img)
    if not faces:
        raise NoFaceError(
            f"no face found in the image ({img.shape[1]}x{img.shape[0]} px); use a frontal portrait with the "
            "face at least about 80 px wide"
        )
    return faces[0], model.landmarks(img, faces[0])
