"""Checked ``from_pretrained`` for transformers models in Hugging Face folders (diffusers layout, wav2vec2).

transformers 5 initialises missing weights at random and only logs a report; here every missing, unexpected
(unless known-unused) or mis-shaped key is a :class:`~fantasytalking.errors.WeightsError` naming it, and a
truncated/corrupt weight file is named before transformers touches it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from fantasytalking.errors import WeightsError

from .files import find_shards, read_shard_shapes
from .keys import describe_key_problems

__all__ = ["checked_from_pretrained", "quiet_transformers"]


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bars (problems are raised as WeightsError instead)."""
    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _check_files(folder: Path) -> None:
    """Read every safetensors header in ``folder`` so a broken file is named (pickled .bin files: transformers)."""
    if (
        (folder / "model.safetensors").is_file()
        or (folder / "model.safetensors.index.json").is_file()
        or any(folder.glob("model-*-of-*.safetensors"))
    ):
        read_shard_shapes(find_shards(folder, "model"))


def checked_from_pretrained(
    cls: Any,
    folder: str | Path,
    *,
    dtype: torch.dtype,
    what: str,
    hint: str,
    unused_prefixes: Sequence[str] = (),
    optional_keys: Sequence[str] = (),
    local_files_only: bool = True,
) -> Any:
    """``cls.from_pretrained(folder)`` that raises :class:`WeightsError` unless every weight was accounted for.

    ``unused_prefixes``: checkpoint keys that may be present and are not used (e.g. a CTC head).
    ``optional_keys``: model keys a checkpoint may lack (training-only parameters).
    """
    folder = Path(folder)
    if folder.is_dir() or local_files_only:
        if not (folder / "config.json").is_file():
            raise WeightsError(f"{what}: no config.json in {folder}. {hint}")
        _check_files(folder)
    try:
        with quiet_transformers():
            model, info = cls.from_pretrained(
                str(folder), dtype=dtype, local_files_only=local_files_only, output_loading_info=True,
                ignore_mismatched_sizes=True,  # reported below, by name, instead of a multi-line RuntimeError
            )  # fmt: skip
    except WeightsError:
        raise
    except Exception as err:
        reason = " ".join(str(err).split())[:300]
        raise WeightsError(f"cannot load {what} from {folder} ({type(err).__name__}: {reason}). {hint}") from None
    missing = [k for k in info.get("missing_keys", ()) if k not in optional_keys]
    unexpected = [k for k in info.get("unexpected_keys", ()) if not k.startswith(tuple(unused_prefixes))]
    misshaped = [
        (k, tuple(model_shape), tuple(ckpt_shape)) for k, ckpt_shape, model_shape in info.get("mismatched_keys", ())
    ]
    problems = describe_key_problems(missing, unexpected, misshaped)
    if problems or info.get("error_msgs"):
        problems = problems or "; ".join(info["error_msgs"])
        raise WeightsError(f"{what} weights in {folder} do not match the model: {problems}. {hint}")
    return model.eval()
