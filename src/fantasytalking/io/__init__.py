"""Input/output helpers: reference image, driving audio, output video and JSON sidecar.

Small typed functions with no model dependencies. Every user-caused problem raises
:class:`fantasytalking.errors.InputError` with a one-line message, and writers leave nothing behind on error.
"""

from fantasytalking.io.audio import (
    MIN_AUDIO_SECONDS,
    audio_duration,
    audio_overflow_warning,
    clip_frames,
    clip_seconds,
    load_audio,
    resample,
    trim_audio,
)
from fantasytalking.io.image import (
    MIN_IMAGE_STD,
    as_image,
    check_image_size,
    image_to_tensor,
    load_image,
    resize_for_model,
    target_size,
)
from fantasytalking.io.video import (
    check_output_path,
    check_outputs,
    probe_video,
    read_video,
    sidecar_path,
    video_header,
    write_json_atomic,
    write_video,
    write_video_with_sidecar,
)

__all__ = [
    "MIN_AUDIO_SECONDS",
    "MIN_IMAGE_STD",
    "as_image",
    "audio_duration",
    "audio_overflow_warning",
    "check_image_size",
    "check_output_path",
    "check_outputs",
    "clip_frames",
    "clip_seconds",
    "image_to_tensor",
    "load_audio",
    "load_image",
    "probe_video",
    "read_video",
    "resample",
    "resize_for_model",
    "sidecar_path",
    "target_size",
    "trim_audio",
    "video_header",
    "write_json_atomic",
    "write_video",
    "write_video_with_sidecar",
]
