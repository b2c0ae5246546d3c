"""fantasytalking: FantasyTalking talking-portrait video on Wan2.1 I2V, as a modular library.

Pieces import on their own (``fantasytalking.models``, ``fantasytalking.conditioning``,
``fantasytalking.sampling``, ``fantasytalking.io``, ``fantasytalking.loading``); the names below
are loaded lazily so ``import fantasytalking`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "FantasyTalkingPipeline": "fantasytalking.pipeline",
    "FantasyTalkingOutput": "fantasytalking.pipeline",
    "GenerationSettings": "fantasytalking.pipeline",
    "FantasyTalkingTransformer": "fantasytalking.models",
    "BranchInput": "fantasytalking.models",
    "ConditioningStack": "fantasytalking.conditioning",
    "Conditioner": "fantasytalking.conditioning",
    "Condition": "fantasytalking.conditioning",
    "AudioConditioner": "fantasytalking.conditioning",
    "FantasyTalkingError": "fantasytalking.errors",
    "InputError": "fantasytalking.errors",
    "WeightsError": "fantasytalking.errors",
}

__all__ = [*sorted(_LAZY), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fantasytalking' has no attribute {name!r}")
