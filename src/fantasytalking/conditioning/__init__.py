"""Conditioning: turn speech, a face and motion intensities into what the backbone consumes."""

from fantasytalking.conditioning.audio import AudioConditioner, AudioProjModel
from fantasytalking.conditioning.base import Condition, Conditioner, ConditioningStack
from fantasytalking.conditioning.face import FaceConditioner
from fantasytalking.conditioning.mel import MelFeatureExtractor, MelSpeechEncoder
from fantasytalking.conditioning.motion import MOTION_NAMES, MotionConditioner
from fantasytalking.conditioning.windows import AudioWindows, frame_windows, gather_windows, num_latent_frames

__all__ = [
    "MOTION_NAMES",
    "AudioConditioner",
    "AudioProjModel",
    "AudioWindows",
    "Condition",
    "Conditioner",
    "ConditioningStack",
    "FaceConditioner",
    "MelFeatureExtractor",
    "MelSpeechEncoder",
    "MotionConditioner",
    "frame_windows",
    "gather_windows",
    "num_latent_frames",
]
