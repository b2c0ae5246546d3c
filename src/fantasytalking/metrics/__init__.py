"""Evaluation metrics, each a ``torchmetrics.Metric`` usable alone (states sum across processes).

============================  ==============================  ======================================================
metric                        class                           weights
============================  ==============================  ======================================================
FID (frames)                  :class:`FID`                    ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid)
FVD (16-frame clips)          :class:`FVD`                    ``i3d_torchscript.pt`` (StyleGAN-V)
Sync-C / Sync-D               :class:`SyncNetScore`           ``syncnet_v2.model`` (syncnet_python)
LPIPS (paired frames)         :class:`LPIPSVideo`             ``alexnet-owt-7be5be79.pth`` (torchvision)
identity consistency          :class:`IdentityConsistency`    none (dlib), ArcFace pluggable
motion dynamics               :class:`MotionDynamics`         none (dlib landmarks)
landmark lip sync             :class:`LandmarkLipSync`        none (dlib landmarks)
SynthTalk ground truth        :class:`SynthTalkMetric`        none (pixels of SynthTalk faces)
============================  ==============================  ======================================================

Videos are ``(B, C, F, H, W)`` tensors in [0, 1] (``value_range="11"`` for [-1, 1]; uint8 in [0, 255]) or lists
of video files (see :mod:`fantasytalking.metrics.video`). Pure numerical cores: :func:`frechet_distance`,
:func:`offset_distances`, :func:`sync_from_distances`. ``fantasytalking evaluate`` is
:func:`fantasytalking.metrics.evaluate.evaluate_main`.

Names are imported lazily, so ``import fantasytalking.metrics`` is cheap. The SynthTalk measures of one video
(``mouth_opening``, ``lipsync_correlation``, ``identity_error``, ``head_motion``...) are functions of
:mod:`fantasytalking.metrics.synthtalk`; :class:`SynthTalkMetric` accumulates them over videos, with the
correlation of measured head motion and requested motion intensity.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # frechet.py
    "frechet_distance": "frechet",
    "gaussian_from_sums": "frechet",
    "FrechetFeatureMetric": "frechet",
    # fid.py / fvd.py
    "FID": "fid",
    "build_fid_inception": "fid",
    "FVD": "fvd",
    "I3D_KWARGS": "fvd",
    "load_i3d": "fvd",
    # sync.py / syncnet.py
    "SyncResult": "sync",
    "offset_distances": "sync",
    "sync_from_distances": "sync",
    "sync_scores": "sync",
    "SyncNet": "syncnet",
    "SyncNetScore": "syncnet",
    "load_syncnet": "syncnet",
    "mfcc": "syncnet",
    "syncnet_face_crops": "syncnet",
    # others
    "LPIPSVideo": "lpips_metric",
    "build_lpips": "lpips_metric",
    "IdentityConsistency": "identity",
    "cosine_to_reference": "identity",
    "MotionDynamics": "dynamics",
    "landmark_dynamics": "dynamics",
    "LandmarkLipSync": "landmark_sync",
    "lagged_correlation": "landmark_sync",
    "mouth_opening_ratio": "landmark_sync",
    "speech_envelope": "landmark_sync",
    "KNOWN_WEIGHTS": "weights",
    "resolve_weights": "weights",
    "iter_videos": "video",
    "evaluate_main": "evaluate",
    "add_evaluate_arguments": "evaluate",
    "evaluate_from_args": "evaluate",
    "evaluate_folders": "evaluate",
    # synthtalk.py (pixel measures of SynthTalk faces) and synthtalk_metric.py (them as one Metric)
    "MOUTH_CLOSED_THRESHOLD": "synthtalk",
    "mouth_opening": "synthtalk",
    "lipsync_correlation": "synthtalk",
    "mouth_closed_fraction": "synthtalk",
    "long_silences": "synthtalk",
    "identity_error": "synthtalk",
    "identity_error_over_frames": "synthtalk",
    "head_motion": "synthtalk",
    "motion_energy": "synthtalk",
    "score_synthtalk": "synthtalk",
    "SynthTalkMetric": "synthtalk_metric",
    "truth_of": "synthtalk_metric",
}

def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = sorted(_EXPORTS)
