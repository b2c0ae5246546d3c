"""Test helpers: tiny random weight folders in the official layouts (``make_tiny_weights``) and a random demo
model folder in the packaged layout (``make_random_demo``)."""

from .demo import make_random_demo
from .tiny import (
    TINY_CLIP,
    TINY_DIT,
    TINY_FANTASYTALKING,
    TINY_T5,
    TINY_VAE,
    TINY_WAV2VEC2,
    make_tiny_weights,
)

__all__ = [
    "TINY_CLIP",
    "TINY_DIT",
    "TINY_FANTASYTALKING",
    "TINY_T5",
    "TINY_VAE",
    "TINY_WAV2VEC2",
    "make_random_demo",
    "make_tiny_weights",
]
