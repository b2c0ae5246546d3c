"""Face-identity encoders: a reference face -> one identity vector, for the face conditioner.

* :class:`DlibFaceEncoder` (offline): dlib's ResNet face-recognition model (``face_recognition_models``),
  128-d, about 0.6 distance between different people. It aligns the face itself from the 68 landmarks.
* :class:`ArcFaceEncoder`: any ArcFace-style network the user supplies as a TorchScript file (``torch.jit.save``)
  or a pickled ``nn.Module`` (``torch.save(model)``), taking ``(B, 3, 112, 112)`` RGB in ``[-1, 1]`` aligned with
  the ArcFace 5-point template (:func:`~fantasytalking.face.align.align_face`) and returning ``(B, E)``.
  No ArcFace weights ship with this library (the common ones are research-only); a missing or unusable file
  raises a one-line :class:`~fantasytalking.errors.WeightsError`.
* :class:`HeadThumbnailEncoder` (no weights): the colour layout of the whole head, a ``G x G`` RGB thumbnail of
  the head-and-shoulders square around the landmarks' face box (hair, ears, neck, collar and the background
  beside them), ``3 G^2`` values in ``[0, 1]``. Face-recognition descriptors are built to ignore exactly what
  this keeps (hair, clothes, lighting, background); docs/design.md says when it helps and why it is not the
  identity metric's own features.
* :class:`ConcatFaceEncoder`: several of these side by side (spec ``"dlib+head"``), one vector.

All return ``float32 (E,)``; the ArcFace output is L2-normalised, dlib's is used as dlib gives it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fantasytalking.errors import InputError, WeightsError
from fantasytalking.face.align import align_face
from fantasytalking.face.landmarks import as_rgb_uint8, box_from_landmarks, dlib_model

__all__ = [
    "ArcFaceEncoder",
    "ConcatFaceEncoder",
    "DlibFaceEncoder",
    "FaceEncoder",
    "HeadThumbnailEncoder",
    "make_face_encoder",
    "parse_face_encoder_spec",
]


def _checked_face(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
    """``uint8 (H, W, 3)`` image, ``float64 (68, 2)`` landmarks and their box, or a one-line InputError."""
    img = as_rgb_uint8(image)
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (68, 2) or not np.isfinite(pts).all():
        raise InputError(f"face landmarks must be finite with shape (68, 2), got {tuple(pts.shape)}")
    return img, pts, box_from_landmarks(pts)


@runtime_checkable
class FaceEncoder(Protocol):
    """``encode(image uint8 (H, W, 3), landmarks (68, 2)) -> float32 (dim,)``; ``name`` goes into ``meta.json``."""

    name: str
    dim: int

    def encode(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray: ...


class DlibFaceEncoder:
    """dlib's 128-d face descriptor (``dlib_face_recognition_resnet_model_v1``), offline.

    Args:
        num_jitters: average over this many randomly jittered copies (0 or 1: one pass; dlib's default 0).
        padding: context around the face dlib's own aligner keeps (dlib's default 0.25).
    """

    name = "dlib-resnet-v1"
    dim = 128

    def __init__(self, num_jitters: int = 0, padding: float = 0.25) -> None:
        import dlib

        self._dlib = dlib
        self._model = dlib_model("recognition")
        self.num_jitters = int(num_jitters)
        self.padding = float(padding)

    def encode(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        img, pts, box = _checked_face(image, landmarks)
        rect = self._dlib.rectangle(round(box.x0), round(box.y0), round(box.x1), round(box.y1))
        shape = self._dlib.full_object_detection(rect, [self._dlib.point(round(x), round(y)) for x, y in pts])
        vec = self._model.compute_face_descriptor(img, shape, self.num_jitters, self.padding)
        return np.asarray(vec, dtype=np.float32)  # (128,)


class ArcFaceEncoder:
    """An ArcFace-style network loaded from a user-supplied file.

    Args:
        path: TorchScript file (``torch.jit.save``) or a whole pickled module (``torch.save(model)``; loaded with
            ``weights_only=False``, so only use files you trust).
        device: where to run it (from the caller).
        dtype: its dtype (from the caller; None: float32).
        size: side of the aligned input crop (112 for the standard ArcFace models).
    """

    name = "arcface"

    def __init__(
        self, path: str | os.PathLike[str], *, device: Any = "cpu", dtype: Any = None, size: int = 112
    ) -> None:
        import torch

        p = Path(path)
        if not p.is_file():
            raise WeightsError(
                f"ArcFace model file not found: {p}; export your model with torch.jit.save (or torch.save(model)) "
                "and pass its path, or use the dlib face encoder"
            )
        self.size = int(size)
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        module: Any
        try:
            module = torch.jit.load(str(p), map_location=self.device)
        except Exception:
            try:
                module = torch.load(str(p), map_location=self.device, weights_only=False)
            except Exception as err:
                reason = " ".join(str(err).split()) or type(err).__name__
                raise WeightsError(
                    f"cannot load the ArcFace model {p} ({reason}); re-export it with torch.jit.save"
                ) from None
        if not isinstance(module, torch.nn.Module) and not isinstance(module, torch.jit.ScriptModule):
            what = "a state dict" if isinstance(module, dict) else type(module).__name__
            raise WeightsError(
                f"ArcFace file {p} holds {what}, not a model; save the whole module (torch.jit.save or "
                "torch.save(model)), not its state_dict"
            )
        self._model = module.to(self.device, self.dtype).eval()
        self.path = p
        try:
            with torch.no_grad():
                probe = self._model(torch.zeros(1, 3, self.size, self.size, device=self.device, dtype=self.dtype))
        except Exception as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise WeightsError(
                f"ArcFace model {p} fails on a (1, 3, {self.size}, {self.size}) input ({reason}); it must map "
                "aligned RGB faces in [-1, 1] to (B, E) embeddings"
            ) from None
        if not isinstance(probe, torch.Tensor) or probe.ndim != 2 or probe.shape[0] != 1:
            shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
            raise WeightsError(f"ArcFace model {p} returned {shape} for one face; it must return (B, E) embeddings")
        self.dim = int(probe.shape[1])

    def encode(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        import torch

        crop = align_face(image, landmarks, self.size)  # (S, S, 3) uint8
        x = (
            torch.from_numpy(np.array(crop)).permute(2, 0, 1)[None].to(self.device, self.dtype) / 127.5 - 1.0
        )  # (1, 3, S, S)
        with torch.no_grad():
            emb = self._model(x).float()  # (1, E)
        emb = torch.nn.functional.normalize(emb, dim=-1)
        return emb[0].cpu().numpy().astype(np.float32)  # (E,)


class HeadThumbnailEncoder:
    """A ``grid x grid`` RGB thumbnail of the head and shoulders: ``3 * grid**2`` values in ``[0, 1]``, row-major
    ``(grid, grid, 3)``.

    The square is centred on the box of the 68 landmarks (brows to chin) with side ``scale`` times the box's
    longer side (2.2: on a SynthTalk frame the hair above the brows, the ears, the neck and the shirt's top; on a
    photo about a passport picture); parts outside the image repeat its edge. Each thumbnail pixel is the mean
    of its cell (box filter), so the vector is the head's colour layout, stable under a pixel's shift.

    Args:
        grid: thumbnail side (8: 192 values).
        scale: side of the square as a multiple of the landmarks box's longer side.
    """

    def __init__(self, grid: int = 8, scale: float = 2.2) -> None:
        if grid < 1 or not scale > 0:
            raise InputError(f"head thumbnail needs grid >= 1 and scale > 0, got grid={grid}, scale={scale}")
        self.grid = int(grid)
        self.scale = float(scale)
        self.dim = 3 * self.grid**2
        self.name = f"head-thumbnail-{self.grid}x{self.grid}"

    def crop(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The head-and-shoulders square ``uint8 (S, S, 3)`` the thumbnail averages (edge pixels repeated)."""
        img, _, box = _checked_face(image, landmarks)
        side = max(self.grid, round(self.scale * max(box.x1 - box.x0, box.y1 - box.y0)))
        x0 = round((box.x0 + box.x1 - side) / 2)
        y0 = round((box.y0 + box.y1 - side) / 2)
        h, w = img.shape[:2]
        pad = ((max(0, -y0), max(0, y0 + side - h)), (max(0, -x0), max(0, x0 + side - w)), (0, 0))
        padded = np.pad(img, pad, mode="edge")  # (H + pads, W + pads, 3)
        top, left = y0 + pad[0][0], x0 + pad[1][0]
        return padded[top : top + side, left : left + side]  # (S, S, 3)

    def encode(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        from PIL import Image

        square = Image.fromarray(self.crop(image, landmarks))
        thumb = np.asarray(square.resize((self.grid, self.grid), Image.Resampling.BOX), dtype=np.float32)
        return (thumb / 255.0).reshape(-1)  # (3 G^2,)


class ConcatFaceEncoder:
    """Several face encoders side by side: ``encode`` is their vectors concatenated in the given order."""

    def __init__(self, encoders: list[FaceEncoder]) -> None:
        if len(encoders) < 2:
            raise InputError("a concatenated face encoder needs at least two encoders, e.g. 'dlib+head'")
        self.encoders = list(encoders)
        self.dim = sum(int(e.dim) for e in self.encoders)
        self.name = "+".join(e.name for e in self.encoders)

    def encode(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        parts = [np.asarray(e.encode(image, landmarks), dtype=np.float32).reshape(-1) for e in self.encoders]
        return np.concatenate(parts)  # (sum of E,)


_SPECS = "'dlib', 'head' (or 'head:GRID'), 'arcface:/path/to/model.pt', or several joined by '+' (e.g. 'dlib+head')"


def parse_face_encoder_spec(spec: str) -> list[tuple[str, str]]:
    """The parts of a face encoder spec as ``(kind, argument)`` pairs (``[("dlib", ""), ("head", "8")]`` for
    ``"dlib+head"``), without building anything (no model or file is loaded); a bad spec is a one-line
    :class:`~fantasytalking.errors.InputError`. ``"+"`` joins parts, so an ArcFace path must hold none."""
    parts = []
    for part in spec.split("+"):
        kind, _, arg = part.partition(":")
        if part == "dlib":
            parts.append(("dlib", ""))
        elif kind == "head" and (part == "head" or (arg.isdigit() and int(arg) >= 1)):
            parts.append(("head", arg or "8"))
        elif kind == "arcface" and arg:
            parts.append(("arcface", arg))
        else:
            raise InputError(f"unknown face encoder {spec!r} (part {part!r}); use {_SPECS}")
    return parts


def make_face_encoder(spec: str = "dlib", *, device: Any = "cpu") -> FaceEncoder:
    """A face encoder from its spec (:func:`parse_face_encoder_spec`): ``"dlib"`` -> :class:`DlibFaceEncoder`;
    ``"head"`` or ``"head:GRID"`` -> :class:`HeadThumbnailEncoder`; ``"arcface:PATH"`` -> :class:`ArcFaceEncoder` on
    ``PATH``; specs joined by ``"+"`` -> :class:`ConcatFaceEncoder` of them."""

    def build(kind: str, arg: str) -> FaceEncoder:
        if kind == "dlib":
            return DlibFaceEncoder()
        if kind == "head":
            return HeadThumbnailEncoder(grid=int(arg))
        return ArcFaceEncoder(arg, device=device)

    encoders = [build(kind, arg) for kind, arg in parse_face_encoder_spec(spec)]
    return encoders[0] if len(encoders) == 1 else ConcatFaceEncoder(encoders)
