"""Lip-tracing mask (FANTASYTALKING.md section 4): the lip region of each frame, from the 68 landmarks.

Per frame: the outer-lip polygon (points 48-59) is filled, then dilated by a disc of radius
``max(margin * mouth_width, min_margin_px)`` pixels, where ``mouth_width`` is the distance between the mouth
corners (48, 54) in that frame. The margin keeps the lips' surroundings (which move with them) inside the mask; the
training loss later brings the mask to the latent grid by trilinear interpolation.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from fantasytalking.errors import InputError
from fantasytalking.face.landmarks import LIP_OUTER

__all__ = ["DEFAULT_LIP_MARGIN", "lip_mask"]

#: Default dilation, as a fraction of the mouth width.
DEFAULT_LIP_MARGIN = 0.15


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary dilation of ``mask (H, W)`` by a disc of ``radius`` px, computed only near the mask."""
    from scipy.ndimage import distance_transform_edt

    if radius <= 0 or not mask.any():
        return mask
    ys, xs = np.nonzero(mask)
    r = int(np.ceil(radius)) + 1
    h, w = mask.shape
    y0, y1 = max(ys.min() - r, 0), min(ys.max() + r + 1, h)
    x0, x1 = max(xs.min() - r, 0), min(xs.max() + r + 1, w)
    window = mask[y0:y1, x0:x1]
    dist = distance_transform_edt(window == 0)  # distance to the nearest lip pixel
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = (dist <= radius).astype(mask.dtype)
    return out


def lip_mask(
    landmarks: np.ndarray,
    height: int,
    width: int,
    *,
    margin: float = DEFAULT_LIP_MARGIN,
    min_margin_px: float = 1.0,
) -> np.ndarray:
    """Rasterise the dilated outer-lip polygon of each frame.

    Args:
        landmarks: ``(N, 68, 2)`` or ``(68, 2)`` pixel ``(x, y)`` in the frames the mask is for. A frame whose
            lip points are not finite gets an empty mask.
        height: mask height (the frames' height).
        width: mask width (the frames' width).
        margin: dilation radius as a fraction of the mouth width (corner-to-corner distance).
        min_margin_px: smallest dilation radius in pixels.

    Returns:
        ``uint8 (N, height, width)`` with 1 on the lips and their margin, 0 elsewhere.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim == 2:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[1:] != (68, 2):
        raise InputError(f"landmarks must have shape (N, 68, 2), got {tuple(np.shape(landmarks))}")
    if height < 1 or width < 1:
        raise InputError(f"mask size must be positive, got {height}x{width}")
    if margin < 0 or min_margin_px < 0:
        raise InputError("lip mask margins must be >= 0")
    out = np.zeros((pts.shape[0], height, width), dtype=np.uint8)
    for i, frame in enumerate(pts):
        lips = frame[list(LIP_OUTER)]  # (12, 2)
        if not np.isfinite(lips).all():
            continue
        canvas = Image.new("L", (width, height), 0)
        ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in lips], fill=1, outline=1)
        poly = np.asarray(canvas, dtype=np.uint8)
        radius = max(margin * float(np.linalg.norm(frame[54] - frame[48])), min_margin_px)
        out[i] = _dilate(poly, radius)
    return out
