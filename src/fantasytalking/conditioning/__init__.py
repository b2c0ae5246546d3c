"""Conditioning: turn speech (and later face and motion) into what the backbone consumes."""

from fantasytalking.conditioning.audio import AudioConditioner, AudioProjModel
from fantasytalking.conditioning.base import Condition, Conditioner, ConditioningStack
from fantasytalking.conditioning.windows import AudioWindows, frame_windows, gather_windows, num_latent_frames

__all__ = [
    "AudioConditioner",
    "AudioProjModel",
    "AudioWindows",
    "Condition",
    "Conditioner",
    "ConditioningStack",
    "frame_windows",
    "gather_windows",
    "num_latent_frames",
]
