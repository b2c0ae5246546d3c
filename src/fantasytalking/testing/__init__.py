"""Test helpers: tiny random weight folders in the official layouts (``make_tiny_weights``)."""

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
    "make_tiny_weights",
]
