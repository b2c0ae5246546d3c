"""Face-identity encoders: a reference face -> one identity vector, for the face conditioner.

* :class:`DlibFaceEncoder` (offline): dlib's ResNet face-recognition model (``face_recognition_models``),
  128-d, about 0.6 distance between different people. It aligns the face itself from the 68 landmarks.
* :class:`ArcFaceEncoder`: any ArcFace-style network the user supplies as a TorchScript file (``torch.jit.save``)
  or a pickled ``nn.Module`` (``torch.save(model)``), taking ``(B, 3, 112, 112)`` RGB in ``[-1, 1]`` aligned with
  the ArcFace 5-point template (:func:`~fantasytalking.face.align.align_face`) and returning ``(B, E)``.
  No ArcFace weights ship with this library (the common ones are research-only); a missing or unusable file
  raises a one-line :class:`~fantasytalking.errors.WeightsError`.

Both return ``float32 (E,)``; the ArcFace output is L2-normalised, dlib's is used as dlib gives it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fantasytalking.errors import InputError, WeightsError
from fantasytalking.face.align import align_face
from fantasytalking.face.landmarks import as_rgb_uint8, box_from_landmarks, dlib_model

__all__ = ["ArcFaceEncoder", "DlibFaceEncoder", "FaceEncoder", "make_face_encoder"]


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
        img = as_rgb_uint8(image)
        pts = np.asarray(landmarks, dtype=np.float64)
        if pts.shape != (68, 2) or not np.isfinite(pts).all():
            raise InputError(f"face landmarks must be finite with shape (68, 2), got {tuple(pts.shape)}")
        box = box_from_landmarks(pts)
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


def make_face_encoder(spec: str = "dlib", *, device: Any = "cpu") -> FaceEncoder:
    """``"dlib"`` -> :class:`DlibFaceEncoder`; ``"arcface:PATH"`` -> :class:`ArcFaceEncoder` on ``PATH``."""
    if spec == "dlib":
        return DlibFaceEncoder()
    if spec.startswith("arcface:") and len(spec) > len("arcface:"):
        return ArcFaceEncoder(spec.split(":", 1)[1], device=device)
    raise InputError(f"unknown face encoder {spec!r}; use 'dlib' or 'arcface:/path/to/model.pt'")
