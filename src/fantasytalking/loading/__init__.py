"""Loading every weight FantasyTalking needs, with full key accounting.

* :func:`resolve_weights` finds the Wan2.1 folder (original or diffusers layout), the wav2vec2 folder and the
  FantasyTalking audio weights (a weights folder, explicit paths or Hub names).
* :func:`load_wan_transformer`, :func:`load_wan_vae`, :func:`load_text_encoder`, :func:`load_image_encoder`,
  :func:`load_wav2vec2` build the diffusers / transformers models from either layout; original checkpoints are
  converted on the fly (the DiT one shard at a time).
* :func:`load_fantasytalking_state` / :func:`save_fantasytalking_state` read and write the audio weights under
  their canonical release names.
* :func:`build_pipeline_components` assembles everything ``FantasyTalkingPipeline`` needs from resolved paths.

Any missing, unexpected or mis-shaped tensor, and any unreadable file, raises a one-line
:class:`~fantasytalking.errors.WeightsError` naming it.
"""

from .audio import WAV2VEC2_SAMPLING_RATE, load_wav2vec2
from .components import build_pipeline_components
from .fantasytalking_ckpt import (
    check_fantasytalking_compatible,
    load_fantasytalking_state,
    save_fantasytalking_state,
)
from .image_encoder import clip_image_processor, load_image_encoder
from .keys import assign_state_dict, check_no_meta, check_state_dict
from .resolve import WeightPaths, resolve_weights
from .text_encoder import load_text_encoder, load_tokenizer
from .wan import WanLayout, detect_wan_layout, load_wan_transformer, load_wan_vae

__all__ = [
    "WAV2VEC2_SAMPLING_RATE",
    "WanLayout",
    "WeightPaths",
    "assign_state_dict",
    "build_pipeline_components",
    "check_fantasytalking_compatible",
    "check_no_meta",
    "check_state_dict",
    "clip_image_processor",
    "detect_wan_layout",
    "load_fantasytalking_state",
    "load_image_encoder",
    "load_text_encoder",
    "load_tokenizer",
    "load_wan_transformer",
    "load_wan_vae",
    "load_wav2vec2",
    "resolve_weights",
    "save_fantasytalking_state",
]
