"""Training data: offline preprocessing of talking videos into WebDataset shards, and the data module reading them.

* :mod:`fantasytalking.data.format`: the shard format (the contract between the two; read it first).
* :mod:`fantasytalking.data.preprocess`: videos -> shards (``fantasytalking preprocess``, ``python -m
  fantasytalking.data``).
* :mod:`fantasytalking.data.datamodule`: :class:`TalkingClipDataModule`, shards -> batches.

The data module is imported lazily (``lightning`` and ``webdataset`` load only when it is used).
"""

from __future__ import annotations

import importlib
from typing import Any

from fantasytalking.data import format
from fantasytalking.data.preprocess import (
    PreprocessConfig,
    Preprocessor,
    PreprocessReport,
    add_preprocess_arguments,
    find_videos,
    preprocess,
    preprocess_from_args,
    preprocess_main,
)

_LAZY = {
    "TalkingClipDataModule": "fantasytalking.data.datamodule",
    "collate_clips": "fantasytalking.data.datamodule",
    "decode_clip": "fantasytalking.data.datamodule",
    "list_shards": "fantasytalking.data.datamodule",
    "read_members": "fantasytalking.data.datamodule",
    "split_shards": "fantasytalking.data.datamodule",
    "ALL_FIELDS": "fantasytalking.data.datamodule",
    "DEFAULT_FIELDS": "fantasytalking.data.datamodule",
}

__all__ = [
    "PreprocessConfig",
    "PreprocessReport",
    "Preprocessor",
    "add_preprocess_arguments",
    "find_videos",
    "format",
    "preprocess",
    "preprocess_from_args",
    "preprocess_main",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fantasytalking.data' has no attribute {name!r}")
