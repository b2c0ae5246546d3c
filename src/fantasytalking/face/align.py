"""Reference face crop: a square, aligned face (the ArcFace 5-point alignment) from 68 landmarks.

The five points are the two eye centres (means of points 36-41 and 42-47), the nose tip (30) and the mouth
corners (48, 54). A similarity transform (rotation, uniform scale, translation; least squares, Umeyama 1991) maps
them onto the standard ArcFace template of the 112 x 112 crop, scaled for other sizes (224 = twice 112).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from fantasytalking.errors import InputError
from fantasytalking.face.landmarks import LEFT_EYE, NOSE_TIP, RIGHT_EYE, as_rgb_uint8

__all__ = ["ARCFACE_TEMPLATE_112", "align_face", "five_points", "similarity_transform"]

#: ArcFace / InsightFace 5-point template for a 112 x 112 crop: image-left eye, image-right eye, nose tip,
#: image-left mouth corner, image-right mouth corner (x, y).
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """``(5, 2)`` alignment points from ``(68, 2)`` landmarks, in the template's order."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (68, 2):
        raise InputError(f"landmarks must have shape (68, 2), got {tuple(pts.shape)}")
    return np.stack(
        [pts[list(RIGHT_EYE)].mean(0), pts[list(LEFT_EYE)].mean(0), pts[NOSE_TIP], pts[48], pts[54]]
    )  # (5, 2)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity ``3 x 3`` matrix mapping ``src (K, 2)`` onto ``dst (K, 2)`` (Umeyama)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)  # (2, 2)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # no reflections
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    var = (s0**2).sum() / len(src)
    scale = float((sig * d).sum() / var) if var > 0 else 1.0
    m = np.eye(3)
    m[:2, :2] = scale * rot
    m[:2, 2] = mu_d - scale * rot @ mu_s
    return m


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Aligned square face crop (ArcFace layout) of the face with ``landmarks`` in ``image``.

    Args:
        image: ``uint8 (H, W, 3)`` RGB.
        landmarks: ``(68, 2)`` pixel coordinates in ``image``.
        size: output side in pixels (112 for ArcFace; 224 keeps more detail, same layout).

    Returns:
        ``uint8 (size, size, 3)``; parts outside the image are black.
    """
    img = as_rgb_uint8(image)
    if size < 16:
        raise InputError(f"face crop size must be at least 16 px, got {size}")
    template = ARCFACE_TEMPLATE_112 * (size / 112.0)
    m = similarity_transform(five_points(landmarks), template)  # source -> crop
    inv = np.linalg.inv(m)  # PIL wants crop -> source
    coeffs = tuple(float(v) for v in inv[:2].ravel())
    out = Image.fromarray(img).transform((size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BICUBIC)
    return np.asarray(out)
