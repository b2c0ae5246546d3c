"""Animation of a SynthTalk face: visemes from espeak-ng phonemes with co-articulation, head motion, blinks, sway.

Visemes. :func:`viseme` maps an espeak-ng phoneme mnemonic (any language) to a mouth target
``(open, width, round)`` in [0, 1]: pauses (``_``, ``_:``, ``_!``, ...) and bilabials (``p b m``) are closed
(``open = 0``); open vowels (``a A aa``) are widest open; rounded vowels and ``w`` are round; other consonants are
slightly open. Unknown mnemonics fall back by their first letter.

Co-articulation. The targets are a step function of time (one step per phoneme). They are sampled at 1 kHz and
smoothed with a Hann window of ``2 * coarticulation`` seconds (default 60 ms each side), so every mouth shape
blends into its neighbours and anticipates the next sound; the window has compact support, so a pause longer than
the window keeps the mouth exactly closed in its middle. A frame's value is the mean of the smoothed curve over
the frame's display interval ``[t0 + j / fps, t0 + (j + 1) / fps)``.

Motion. Head translation / roll / scale and body sway are sums of three sinusoids (0.15-0.9 Hz, random phases)
times ``intensity``; blinks happen at ``0.15 + 0.45 * intensity`` per second. Every random number is drawn in a
fixed count whatever the intensity, so the same seed at intensities 0.1 / 0.5 / 1.0 gives the same trajectory
scaled, and strictly increasing motion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CLOSED_PHONEMES",
    "MOTION_AMPLITUDES",
    "PAUSE_PREFIX",
    "MotionTrack",
    "MouthTrack",
    "is_pause",
    "motion_track",
    "mouth_track",
    "viseme",
]

PAUSE_PREFIX = "_"
CLOSED_PHONEMES = frozenset({"p", "b", "m", "m-", "p-", "b-"})

# (open, width, round) per phoneme, espeak-ng mnemonics without stress or length marks.
_VISEMES: dict[str, tuple[float, float, float]] = {
    # open vowels
    "a": (1.0, 0.6, 0.0), "A": (1.0, 0.5, 0.1), "aa": (1.0, 0.6, 0.0), "a#": (0.85, 0.55, 0.0),
    "aI": (0.9, 0.6, 0.0), "aU": (0.9, 0.4, 0.4), "V": (0.75, 0.5, 0.0), "A@": (0.9, 0.5, 0.1),
    # mid vowels
    "E": (0.65, 0.7, 0.0), "e": (0.55, 0.75, 0.0), "eI": (0.55, 0.75, 0.0), "e@": (0.6, 0.65, 0.0),
    "@": (0.4, 0.5, 0.0), "3": (0.45, 0.5, 0.2), "3:": (0.45, 0.5, 0.2), "@L": (0.35, 0.5, 0.0),
    "VR": (0.5, 0.5, 0.2),
    # close front vowels
    "i": (0.3, 0.9, 0.0), "I": (0.35, 0.85, 0.0), "i@": (0.35, 0.8, 0.0), "I#": (0.35, 0.8, 0.0),
    "y": (0.3, 0.2, 1.0), "Y": (0.35, 0.25, 0.9),
    # rounded vowels
    "O": (0.7, 0.3, 0.7), "0": (0.75, 0.35, 0.6), "o": (0.55, 0.25, 0.85), "oU": (0.55, 0.3, 0.8),
    "O@": (0.65, 0.3, 0.7), "o@": (0.6, 0.3, 0.75), "OI": (0.65, 0.35, 0.65), "U": (0.35, 0.2, 0.9),
    "u": (0.3, 0.15, 1.0), "U@": (0.4, 0.25, 0.85), "W": (0.4, 0.25, 0.9),
    # consonants
    "f": (0.08, 0.55, 0.0), "v": (0.08, 0.55, 0.0), "w": (0.15, 0.1, 1.0),
    "T": (0.2, 0.5, 0.0), "D": (0.2, 0.5, 0.0), "s": (0.15, 0.7, 0.0), "z": (0.15, 0.7, 0.0),
    "t": (0.2, 0.5, 0.0), "d": (0.2, 0.5, 0.0), "n": (0.2, 0.5, 0.0), "l": (0.3, 0.5, 0.0),
    "r": (0.25, 0.35, 0.4), "R": (0.3, 0.45, 0.2), "j": (0.2, 0.7, 0.0), "h": (0.4, 0.5, 0.0),
    "k": (0.3, 0.5, 0.0), "g": (0.3, 0.5, 0.0), "N": (0.25, 0.5, 0.0), "x": (0.3, 0.5, 0.0),
    "C": (0.2, 0.7, 0.0), "S": (0.2, 0.3, 0.7), "Z": (0.2, 0.3, 0.7), "tS": (0.2, 0.3, 0.7),
    "dZ": (0.2, 0.3, 0.7), "ts": (0.15, 0.6, 0.0), "?": (0.1, 0.5, 0.0),
}  # fmt: skip
_VOWEL_FALLBACK = {"a": (0.9, 0.6, 0.0), "e": (0.55, 0.7, 0.0), "i": (0.3, 0.85, 0.0), "o": (0.6, 0.3, 0.75),
                   "u": (0.3, 0.15, 1.0), "y": (0.3, 0.2, 1.0), "@": (0.4, 0.5, 0.0)}  # fmt: skip
_CONSONANT_DEFAULT = (0.2, 0.5, 0.0)
_NEUTRAL_WIDTH = 0.5


def is_pause(phoneme: str) -> bool:
    """espeak-ng pause mnemonics start with ``_`` (``_``, ``_:``, ``_!``, ``_^_``...); empty strings count too."""
    return not phoneme.strip() or phoneme.startswith(PAUSE_PREFIX) or phoneme in {";", "'", ","}


def viseme(phoneme: str) -> tuple[float, float, float]:
    """Mouth target ``(open, width, round)`` in [0, 1] for an espeak-ng phoneme mnemonic (see module doc)."""
    if is_pause(phoneme):
        return (0.0, _NEUTRAL_WIDTH, 0.0)
    p = phoneme.strip("'\",%=")
    if p in CLOSED_PHONEMES:
        return (0.0, 0.5, 0.0)
    for key in (p, p.rstrip(":#-~2;^"), p.rstrip(":#-~2;^")[:2], p[:1]):
        if key in _VISEMES:
            return _VISEMES[key]
    base = p[:1].lower()
    if base in _VOWEL_FALLBACK:
        return _VOWEL_FALLBACK[base]
    if base in ("p", "b", "m"):
        return (0.0, 0.5, 0.0)
    return _CONSONANT_DEFAULT


@dataclass
class MouthTrack:
    """Per-frame mouth shape, each ``float32 (N,)`` in [0, 1], plus ``speaking`` (a non-pause phoneme at the
    frame's midpoint)."""

    open: np.ndarray
    width: np.ndarray
    round: np.ndarray
    speaking: np.ndarray


def mouth_track(
    phonemes: Sequence[tuple[str, float, float]],
    num_frames: int,
    fps: float,
    *,
    t0: float = 0.0,
    coarticulation: float = 0.06,
    rate_hz: int = 1000,
) -> MouthTrack:
    """Frames ``j = 0..N-1`` (shown at ``t0 + j / fps``) of the mouth driven by a phoneme timeline in seconds."""
    end = t0 + num_frames / fps
    pad = coarticulation + 1.0 / fps
    grid = np.arange(int(np.floor((t0 - pad) * rate_hz)), int(np.ceil((end + pad) * rate_hz)) + 1) / rate_hz  # (G,)
    target = np.zeros((3, grid.size), dtype=np.float64)
    target[1] = _NEUTRAL_WIDTH
    speaking = np.zeros(grid.size, dtype=bool)
    for name, a, b in phonemes:
        sel = (grid >= a) & (grid < b)
        if sel.any():
            target[:, sel] = np.asarray(viseme(name), dtype=np.float64)[:, None]
            speaking[sel] = not is_pause(name)
    half = max(round(coarticulation * rate_hz), 1)
    kernel = np.hanning(2 * half + 1)[1:-1] if half > 1 else np.ones(1)
    kernel /= kernel.sum()
    smooth = np.stack([np.convolve(row, kernel, mode="same") for row in target])  # (3, G)
    # constant-extend the edges (np.convolve pads with zeros, which would pull the width down)
    smooth[1] = np.where(np.abs(smooth[1]) < 1e-12, _NEUTRAL_WIDTH, smooth[1])
    out = np.zeros((3, num_frames), dtype=np.float64)
    speak = np.zeros(num_frames, dtype=np.float32)
    for j in range(num_frames):
        a, b = t0 + j / fps, t0 + (j + 1) / fps
        sel = (grid >= a) & (grid < b)
        out[:, j] = smooth[:, sel].mean(axis=1) if sel.any() else smooth[:, np.argmin(np.abs(grid - a))]
        mid = np.argmin(np.abs(grid - (a + b) / 2))
        speak[j] = float(speaking[mid])
    out = np.clip(out, 0.0, 1.0)
    out[0][out[0] < 1e-6] = 0.0
    return MouthTrack(*(out.astype(np.float32)), speaking=speak)  # type: ignore[misc]


#: Largest excursion at intensity 1: head translation (fraction of frame side), roll (rad), scale, body sway.
MOTION_AMPLITUDES = {"head_dx": 0.05, "head_dy": 0.03, "roll": 0.14, "scale": 0.04, "body_dx": 0.03, "body_dy": 0.012}


@dataclass
class MotionTrack:
    """Per-frame rigid motion, each ``float32 (N,)``: head translation ``head_dx, head_dy`` (fraction of the frame
    side), ``roll`` (rad), ``scale`` (1 = rest), ``body_dx, body_dy`` (fraction of the side), ``blink`` (0 open,
    1 closed)."""

    head_dx: np.ndarray
    head_dy: np.ndarray
    roll: np.ndarray
    scale: np.ndarray
    body_dx: np.ndarray
    body_dy: np.ndarray
    blink: np.ndarray


def _smooth_noise(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Sum of three sinusoids (0.15-0.9 Hz, random phases), peak about 1."""
    freqs = rng.uniform(0.15, 0.9, size=3)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    weights = rng.uniform(0.5, 1.0, size=3)
    x = (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t[None] + phases[:, None])).sum(0)
    return x / weights.sum()


def motion_track(
    num_frames: int, fps: float, intensity: float, rng: np.random.Generator, *, t0: float = 0.0
) -> MotionTrack:
    """Head motion, blinks and body sway for ``num_frames`` at ``fps``, scaled by ``intensity`` in [0, 1]."""
    k = float(np.clip(intensity, 0.0, 1.0))
    t = t0 + np.arange(num_frames) / fps  # (N,)
    ch = {name: k * amp * _smooth_noise(rng, t) for name, amp in MOTION_AMPLITUDES.items()}
    ch["scale"] = 1.0 + ch["scale"]
    # blinks: candidate onsets every 50 ms, accepted with the rate's probability (fixed number of draws)
    step = 0.05
    onsets = np.arange(t0 - 0.3, t[-1] + step if num_frames else t0, step)
    u = rng.uniform(size=onsets.size)
    rate = 0.15 + 0.45 * k
    blink = np.zeros(num_frames, dtype=np.float64)
    for s in onsets[u < rate * step]:
        d = (t - s) / 0.16  # a blink lasts 160 ms: closes then opens
        blink = np.maximum(blink, np.where((d >= 0) & (d <= 1), np.sin(np.pi * np.clip(d, 0, 1)), 0.0))
    return MotionTrack(**{n: np.asarray(v, dtype=np.float32) for n, v in ch.items()},
                       blink=blink.astype(np.float32))  # fmt: skip
