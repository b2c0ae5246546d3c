"""wav2vec2 speech encoder (``facebook/wav2vec2-base-960h`` or any ``Wav2Vec2Model`` checkpoint folder).

FantasyTalking uses ``Wav2Vec2Model(...).last_hidden_state`` (about 50 tokens per second of 16 kHz audio). The
released checkpoint is a ``Wav2Vec2ForCTC``: its ``lm_head`` is known-unused, as are the heads of pre-training
and classification checkpoints. ``masked_spec_embed`` (SpecAugment, training only) may be absent.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

from fantasytalking.errors import WeightsError

from .hf import checked_from_pretrained, quiet_transformers

__all__ = ["WAV2VEC2_SAMPLING_RATE", "load_wav2vec2"]

WAV2VEC2_SAMPLING_RATE = 16_000
_UNUSED = ("lm_head.", "quantizer.", "project_q.", "project_hid.", "classifier.", "projector.", "dropout_features.")
_HINT = "Re-download facebook/wav2vec2-base-960h into that folder."


def load_wav2vec2(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    local_files_only: bool = True,
) -> tuple[Wav2Vec2Model, Wav2Vec2FeatureExtractor]:
    """Load a ``Wav2Vec2Model`` and its feature extractor from a folder (a hub name only if ``local_files_only``
    is False). The feature extractor must work at 16 kHz."""
    folder = Path(path)
    if local_files_only and not folder.is_dir():
        raise WeightsError(f"wav2vec2 folder {folder} does not exist: download facebook/wav2vec2-base-960h into it.")
    model = checked_from_pretrained(
        Wav2Vec2Model, folder, dtype=dtype, what="wav2vec2", hint=_HINT, unused_prefixes=_UNUSED,
        optional_keys=("masked_spec_embed",), local_files_only=local_files_only,
    )  # fmt: skip
    if folder.is_dir() and not (folder / "preprocessor_config.json").is_file():
        raise WeightsError(f"wav2vec2 folder {folder} has no preprocessor_config.json: {_HINT}")
    try:
        with quiet_transformers():
            extractor = Wav2Vec2FeatureExtractor.from_pretrained(str(folder), local_files_only=local_files_only)
    except Exception as err:
        raise WeightsError(f"cannot load the wav2vec2 feature extractor in {folder} ({err}): {_HINT}") from None
    if extractor.sampling_rate != WAV2VEC2_SAMPLING_RATE:
        raise WeightsError(
            f"the wav2vec2 feature extractor in {folder} expects {extractor.sampling_rate} Hz audio, not 16000 Hz: "
            "FantasyTalking was trained with facebook/wav2vec2-base-960h; use that."
        )
    return model.to(device), extractor
