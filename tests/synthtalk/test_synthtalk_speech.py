"""espeak-ng speech through libespeak-ng: audio, phoneme timeline, voices, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fantasytalking.data.synthtalk import VOICES, Speech, espeak_available, synthesize
from fantasytalking.errors import InputError

pytestmark = pytest.mark.skipif(not espeak_available(), reason="libespeak-ng1 is not installed")


def _check_timeline(speech: Speech) -> None:
    ph = speech.phonemes
    assert ph, "no phoneme events"
    assert ph[0][1] == 0.0
    assert ph[-1][2] == pytest.approx(speech.duration, abs=1e-6)
    for (_, a0, a1), (_, b0, _) in itertools.pairwise(ph):
        assert a0 < a1 == b0  # monotonic and contiguous
    assert all(isinstance(p, str) and p for p, _, _ in ph)


@pytest.mark.parametrize(
    ("text", "voice"),
    [
        ("Please call me back when you can.", "en-us"),
        ("Guten Morgen, wie geht es dir?", "de"),
        ("Buenos días, ¿cómo estás hoy?", "es+f4"),
    ],
)
def test_audio_and_phonemes_cover_the_utterance(text: str, voice: str) -> None:
    sp = synthesize(text, voice=voice, rate=170)
    assert sp.audio.dtype == np.float32 and sp.audio.ndim == 1
    assert 0.5 < sp.duration < 6.0
    assert np.isfinite(sp.audio).all() and np.abs(sp.audio).max() > 0.05
    _check_timeline(sp)
    spoken = [p for p, _, _ in sp.phonemes if not p.startswith("_")]
    assert len(spoken) >= 10


def test_deterministic_and_rate_changes_duration() -> None:
    a = synthesize("The quick brown fox.", voice="en-us", rate=150)
    b = synthesize("The quick brown fox.", voice="en-us", rate=150)
    assert np.array_equal(a.audio, b.audio) and a.phonemes == b.phonemes
    fast = synthesize("The quick brown fox.", voice="en-us", rate=260)
    assert fast.duration < a.duration


def test_every_bank_voice_speaks() -> None:
    for split in VOICES.values():
        for lang, voices in split.items():
            for v in voices:
                sp = synthesize({"en": "Hi there.", "de": "Hallo du.", "es": "Hola amigo."}[lang], voice=v)
                assert sp.duration > 0.2, v


def test_bad_voice_and_empty_text_are_input_errors() -> None:
    with pytest.raises(InputError, match="no voice"):
        synthesize("Hello.", voice="xx-nonexistent")
    with pytest.raises(InputError):
        synthesize("   ")
