"""Reference image: load, check, size for the model, and convert to a tensor.

The model's size rule (FANTASYTALKING.md 3.8): scale so the longest edge is ``max_edge`` (512) keeping the
aspect ratio with int truncation, then round each side UP to a multiple of 16.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from fantasytalking.errors import InputError

__all__ = [
    "MIN_IMAGE_STD",
    "as_image",
    "check_image_size",
    "image_to_tensor",
    "load_image",
    "resize_for_model",
    "target_size",
]

#: Below this per-channel pixel standard deviation (0..255 units, largest channel) an image is treated as blank.
MIN_IMAGE_STD = 2.0

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def _to_8bit_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited on white, high bit depths are rescaled."""
    mode = img.mode
    if mode.startswith("I;16") or mode in {"I", "F"}:
        arr = np.asarray(img).astype(np.float64)
        finite = arr[np.isfinite(arr)]
        peak = float(finite.max()) if finite.size else 0.0
        if mode.startswith("I;16") or (mode == "I" and peak > 255.0):
            arr = arr / 257.0  # 16-bit range -> 8-bit range
        elif mode == "F" and peak <= 1.0:
            arr = arr * 255.0  # float image in [0, 1]
        arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
        gray = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "1":
        img = img.convert("L")
    return img.convert("RGB")


def as_image(image: str | os.PathLike[str] | Image.Image | np.ndarray) -> Image.Image:
    """An input image as an RGB PIL image: a path (:func:`load_image`), a PIL image (any mode, converted as a file's
    pixels are), or a
    ``uint8 (H, W, 3)`` RGB array such as a frame of an earlier output (``output.frames[-1]``)."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"an image array must be uint8 RGB of shape (H, W, 3), like an output's frames; got "
                             f"{image.dtype} {tuple(image.shape)}")  # fmt: skip
        return Image.fromarray(image)
    if isinstance(image, Image.Image):
        return _to_8bit_rgb(image)  # as a file's pixels are: transparency on white, high bit depths rescaled
    return load_image(image)


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Load an image file as 8-bit RGB, applying EXIF orientation.

    Grayscale, palette, 16-bit and transparent images are converted (transparency on white). Raises
    :class:`InputError` naming the path if the file is missing, unreadable, not an image, or blank.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"image file not found: {p}; check the path")
    if p.is_dir():
        raise InputError(f"image path is a folder, not a file: {p}; pass an image file (png, jpg, webp, ...)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. DecompressionBombWarning, truncated-EXIF warnings
            with Image.open(p) as src:
                src.load()
                img = ImageOps.exif_transpose(src) or src
                rgb = _to_8bit_rgb(img)
                rgb.load()
    except UnidentifiedImageError:
        raise InputError(
            f"not an image file (or a format Pillow cannot read): {p}; use a png, jpg or webp image"
        ) from None
    except PermissionError:
        raise InputError(f"cannot read image file (permission denied): {p}; check its permissions") from None
    except Image.DecompressionBombError:
        raise InputError(f"image is too large to decode safely: {p}; downscale it first") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise InputError(f"cannot decode image file {p} ({reason}); the file may be truncated or corrupt") from None

    if rgb.width < 1 or rgb.height < 1:
        raise InputError(f"image has no pixels: {p}; use a real image")
    std = float(np.asarray(rgb, dtype=np.float32).reshape(-1, 3).std(axis=0).max())  # per channel: flat colour -> 0
    if std < MIN_IMAGE_STD:
        raise InputError(
            f"image has no usable content (a single flat colour, pixel std {std:.2f}): {p}; use a photo or drawing of a face"
        )
    return rgb


def check_image_size(img: Image.Image, min_side: int, *, path: str | os.PathLike[str] | None = None) -> None:
    """Raise :class:`InputError` if the shorter side of ``img`` is below ``min_side`` pixels."""
    w, h = img.size
    if min(w, h) < min_side:
        where = f" ({path})" if path is not None else ""
        raise InputError(
            f"image{where} is {w}x{h}; the model needs at least {min_side} px on the shorter side; use a larger image"
        )


def target_size(width: int, height: int, max_edge: int = 512, multiple: int = 16) -> tuple[int, int]:
    """Model input size ``(w, h)`` for an image of ``width`` x ``height``.

    The release's rule: scale so the longest edge is ``max_edge`` keeping aspect (int truncation), then round
    each side up to a multiple of ``multiple``. E.g. 1024x768 -> 512x384, 1000x700 -> 512x368.
    """
    if width < 1 or height < 1:
        raise InputError(f"image size must be positive, got {width}x{height}")
    if max_edge < 1 or multiple < 1:
        raise InputError(f"max_edge and multiple must be positive, got max_edge={max_edge}, multiple={multiple}")
    scale = max_edge / max(width, height)
    w0, h0 = int(width * scale), int(height * scale)

    def up(x: int) -> int:
        return max(multiple, math.ceil(x / multiple) * multiple)

    return up(w0), up(h0)


def resize_for_model(img: Image.Image, max_edge: int = 512, multiple: int = 16) -> Image.Image:
    """Resize ``img`` (LANCZOS, one resampling) to :func:`target_size` of its size."""
    size = target_size(img.width, img.height, max_edge=max_edge, multiple=multiple)
    if img.mode != "RGB":
        img = _to_8bit_rgb(img)
    if size == img.size:
        return img.copy()
    return img.resize(size, Image.Resampling.LANCZOS)


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 tensor ``(3, H, W)`` in ``[-1, 1]``."""
    if img.mode != "RGB":
        img = _to_8bit_rgb(img)
    arr = np.array(img, dtype=np.uint8, copy=True)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div_(127.5).sub_(1.0)
