"""Follow one face through a clip, and cut a face-centred square crop that stays still over the clip.

The crop box is fixed for the whole clip (one box, not one per frame): the head keeps its own motion inside the
crop, which is what the motion-intensity measures and the model should see, and the crop never jitters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fantasytalking.errors import InputError
from fantasytalking.face.landmarks import FaceBox, LandmarkBackend, NoFaceError, as_rgb_uint8

__all__ = [
    "CropBox",
    "FaceTrack",
    "clip_crop_box",
    "crop_frames",
    "landmarks_to_crop",
    "track_face",
]


@dataclass
class FaceTrack:
    """One face followed through ``N`` frames.

    Attributes:
        landmarks: ``float32 (N, 68, 2)`` pixel ``(x, y)`` in the frames given to :func:`track_face`.
        boxes: ``float32 (N, 4)`` detector boxes ``(x0, y0, x1, y1)``; a frame where the detector missed the face
            carries the nearest earlier box (or the first later one).
        detected: ``bool (N,)``, whether the detector itself found the face in that frame.
        num_faces: ``int32 (N,)``, faces the detector saw in each frame (-1 where detection was skipped).
        backend: name of the landmark backend.
        second_face_ratio: largest ``area(second face) / area(tracked face)`` over the detected frames (0 if never
            two faces): a large value means another person is in the shot.
    """

    landmarks: np.ndarray
    boxes: np.ndarray
    detected: np.ndarray
    num_faces: np.ndarray
    backend: str
    second_face_ratio: float = 0.0

    @property
    def num_frames(self) -> int:
        return int(self.landmarks.shape[0])

    @property
    def missing_fraction(self) -> float:
        """Fraction of frames where the detector did not find the tracked face."""
        return float(1.0 - self.detected.mean()) if self.detected.size else 1.0

    def face_sizes(self) -> np.ndarray:
        """``float32 (N,)``: per-frame face size, the longer side of the landmarks' bounding box (pixels)."""
        extent = self.landmarks.max(axis=1) - self.landmarks.min(axis=1)  # (N, 2)
        return extent.max(axis=1).astype(np.float32)


def _pick(faces: list[FaceBox], previous: FaceBox | None, min_iou: float) -> FaceBox | None:
    """The face continuing the track: best overlap with the previous box, or the largest face to start."""
    if not faces:
        return None
    if previous is None:
        return faces[0]
    best = max(faces, key=previous.iou)
    return best if previous.iou(best) >= min_iou else None


def track_face(
    frames: np.ndarray | Sequence[np.ndarray],
    backend: LandmarkBackend,
    *,
    detect_every: int = 1,
    min_iou: float = 0.3,
) -> FaceTrack:
    """Detect the largest face in the first frame where there is one and follow it (by box overlap) to the end.

    Args:
        frames: ``uint8 (N, H, W, 3)`` RGB frames (or a sequence of ``(H, W, 3)``).
        backend: detector + landmark model (:class:`~fantasytalking.face.landmarks.DlibLandmarker`, ...).
        detect_every: run the detector on every ``k``-th frame only; the others reuse the last box.
        min_iou: a detection continues the track when its box overlaps the previous one by at least this.

    Returns:
        A :class:`FaceTrack`; landmarks are predicted in every frame, from the detector's box or, where it missed,
        the nearest one (see :attr:`FaceTrack.detected` for which is which).

    Raises:
        NoFaceError: no face in any frame.
    """
    if detect_every < 1:
        raise InputError(f"detect_every must be >= 1, got {detect_every}")
    images = [as_rgb_uint8(f, what="frame") for f in frames]
    n = len(images)
    if n == 0:
        raise InputError("cannot track a face in an empty clip")
    boxes: list[FaceBox | None] = [None] * n
    detected = np.zeros(n, dtype=bool)
    num_faces = np.full(n, -1, dtype=np.int32)
    second_ratio = 0.0
    previous: FaceBox | None = None
    for i, img in enumerate(images):
        if i % detect_every == 0 or previous is None:
            faces = backend.detect(img)
            num_faces[i] = len(faces)
            chosen = _pick(faces, previous, min_iou)
            if chosen is not None:
                detected[i] = True
                previous = chosen
                others = [f.area for f in faces if f is not chosen]
                if others and chosen.area > 0:
                    second_ratio = max(second_ratio, max(others) / chosen.area)
        boxes[i] = previous
    if not detected.any():
        raise NoFaceError(f"no face found in any of the {n} frames")
    first = next(b for b in boxes if b is not None)
    filled = [b if b is not None else first for b in boxes]  # frames before the first detection
    landmarks = np.stack([backend.landmarks(img, box) for img, box in zip(images, filled)]).astype(np.float32)
    return FaceTrack(
        landmarks=landmarks,  # (N, 68, 2)
        boxes=np.stack([b.as_array() for b in filled]),  # (N, 4)
        detected=detected,
        num_faces=num_faces,
        backend=backend.name,
        second_face_ratio=float(second_ratio),
    )


# --------------------------------------------------------------------------------------------------- crop


@dataclass(frozen=True)
class CropBox:
    """A square crop ``[x0, x0 + side) x [y0, y0 + side)`` in source pixels (floats: sub-pixel exact)."""

    x0: float
    y0: float
    side: float

    @property
    def x1(self) -> float:
        return self.x0 + self.side

    @property
    def y1(self) -> float:
        return self.y0 + self.side

    def as_list(self) -> list[float]:
        """``[x0, y0, x1, y1]``, the form stored in ``meta.json``."""
        return [float(self.x0), float(self.y0), float(self.x1), float(self.y1)]

    def contains(self, points: np.ndarray) -> bool:
        """Whether every ``(..., 2)`` point lies inside the box."""
        pts = np.asarray(points).reshape(-1, 2)
        return bool(
            (pts[:, 0] >= self.x0).all()
            and (pts[:, 0] <= self.x1).all()
            and (pts[:, 1] >= self.y0).all()
            and (pts[:, 1] <= self.y1).all()
        )


def clip_crop_box(
    landmarks: np.ndarray,
    frame_size: tuple[int, int],
    *,
    scale: float = 2.4,
    lift: float = 0.15,
    motion_margin: float = 0.1,
) -> CropBox:
    """One square crop for a whole clip, centred on the face.

    The face size ``s`` is the largest over the clip of the landmarks' bounding-box longer side (jaw to brows).
    The side is ``max(scale * s, (1 + 2 * motion_margin) * extent)``, with ``extent`` the longer side of the union
    of all frames' landmark boxes (so a moving head stays inside), capped at the frame's shorter side. The centre
    is the median over frames of the landmark-box centres, raised by ``lift * s`` (landmarks stop at the brows:
    this keeps forehead and hair in). The box is then shifted, not shrunk, to lie inside the frame.

    Args:
        landmarks: ``(N, 68, 2)`` (or ``(68, 2)``) pixel coordinates.
        frame_size: ``(height, width)`` of the source frames.
        scale: crop side in face sizes (2.4 gives head and upper shoulders for a typical talking-head shot).
        lift: upward shift of the centre, in face sizes.
        motion_margin: margin around the union of the landmark boxes, as a fraction of its extent.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim == 2:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[-1] != 2 or pts.shape[0] == 0:
        raise InputError(f"landmarks must have shape (N, 68, 2), got {tuple(np.shape(landmarks))}")
    h, w = int(frame_size[0]), int(frame_size[1])
    lo, hi = pts.min(axis=1), pts.max(axis=1)  # (N, 2) per-frame landmark boxes
    size = float((hi - lo).max())
    union = float((hi.max(axis=0) - lo.min(axis=0)).max())
    side = min(max(scale * size, (1.0 + 2.0 * motion_margin) * union), float(min(h, w)))
    cx, cy = np.median((lo + hi) / 2.0, axis=0)
    cy -= lift * size
    x0 = float(np.clip(cx - side / 2.0, 0.0, w - side))
    y0 = float(np.clip(cy - side / 2.0, 0.0, h - side))
    return CropBox(x0, y0, float(side))


def crop_frames(frames: np.ndarray | Sequence[np.ndarray], box: CropBox, size: int) -> np.ndarray:
    """Cut ``box`` out of every frame and resize it to ``size x size`` (bicubic, antialiased).

    Args:
        frames: ``uint8 (N, H, W, 3)``.

    Returns:
        ``uint8 (N, size, size, 3)``.
    """
    region = (box.x0, box.y0, box.x1, box.y1)
    out = [
        np.asarray(
            Image.fromarray(as_rgb_uint8(f, what="frame")).resize((size, size), Image.Resampling.BICUBIC, region)
        )
        for f in frames
    ]
    return np.stack(out)


def landmarks_to_crop(landmarks: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """Map source-pixel landmarks ``(..., 2)`` into the ``size x size`` crop of ``box`` (float32)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    return ((pts - np.array([box.x0, box.y0])) * (size / box.side)).astype(np.float32)
