"""Speech for SynthTalk: espeak-ng through libespeak-ng (ctypes), with phoneme timings from the synthesis callback.

``espeak-ng --pho`` does not report timings on these machines, so this module talks to the library directly:
``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, ..., espeakINITIALIZE_PHONEME_EVENTS)`` makes ``espeak_Synth`` call
our callback with audio chunks and ``espeakEVENT_PHONEME`` events whose ``id.string`` is the phoneme mnemonic and
``audio_position`` its start in milliseconds. A phoneme ends where the next event starts (the last one at the end of
the audio). The library keeps state between utterances, so each utterance is spoken in a forked child of a
process that initialised it and never spoke (bit-for-bit reproducible; see ``_Engine._synth_forked``). Audio comes at espeak's rate (22050 Hz) and is resampled to 16 kHz float32 in [-1, 1].

Debian package: ``libespeak-ng1`` (pulls ``espeak-ng-data``); the ``espeak-ng`` package brings both.

::

    from fantasytalking.data.synthtalk.speech import synthesize
    speech = synthesize("Hello there.", voice="en-us+f3", rate=160)
    speech.audio.shape, speech.phonemes[:3]  # (T,), [("_", 0.0, 0.04), ("h", 0.04, 0.1), ...]
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import struct
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np

from fantasytalking.errors import InputError

__all__ = ["SAMPLE_RATE", "Speech", "espeak_available", "synthesize"]

SAMPLE_RATE = 16_000

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class Speech:
    """Synthesised speech: ``audio`` float32 ``(T,)`` at 16 kHz and ``phonemes`` ``[(mnemonic, start_s, end_s)]``
    (contiguous, monotonic, covering ``[0, T / 16000]``; pauses are ``"_"``)."""

    audio: np.ndarray
    phonemes: list[tuple[str, float, float]] = field(default_factory=list)
    text: str = ""
    voice: str = ""
    rate: int = 0

    @property
    def duration(self) -> float:
        return self.audio.size / SAMPLE_RATE


class _Engine:
    """The process-wide libespeak-ng handle (the library keeps global state: one synthesis at a time)."""

    _lock = threading.Lock()
    _instance: _Engine | None = None

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError:
            raise InputError(
                "libespeak-ng is not installed; install it with `apt-get install -y libespeak-ng1` (or espeak-ng)"
            ) from None
        lib = self.lib
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                     _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT)  # fmt: skip
        if rate <= 0:
            raise InputError("libespeak-ng failed to initialise; reinstall espeak-ng-data")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[str, int]] = []
        self._cb = _CALLBACK(self._on_synth)  # keep a reference: the library holds the raw pointer
        lib.espeak_SetSynthCallback(self._cb)
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")  # espeak-ng's noise uses rand()

    @classmethod
    def get(cls) -> _Engine:
        with cls._lock:
            if cls._instance is None:
                cls._instance = _Engine()
            return cls._instance

    def _on_synth(self, wav: ctypes._Pointer, numsamples: int, events: ctypes._Pointer) -> int:  # type: ignore[type-arg]
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                name = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                self._events.append((name, int(ev.audio_position)))
            i += 1
        return 0

    def _synth_here(self, text: str, voice: str, rate: int, pitch: int | None) -> tuple[int, np.ndarray, list]:
        """``(error, pcm int16 (T22,), [(mnemonic, ms)])``; error 1: unknown voice, 2: synthesis failed."""
        if self.lib.espeak_SetVoiceByName(voice.encode("utf-8")) != 0:
            return 1, np.zeros(0, np.int16), []
        self.lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
        if pitch is not None:
            self.lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        if self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
            return 2, np.zeros(0, np.int16), []
        self.lib.espeak_Synchronize()
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return 0, pcm.astype(np.int16), list(self._events)

    def _synth_forked(self, text: str, voice: str, rate: int, pitch: int | None) -> tuple[int, np.ndarray, list]:
        """Synthesise in a forked child, so every utterance starts from the same freshly initialised state.

        libespeak-ng keeps state across utterances (pitch flutter, libc ``rand`` noise): the same text spoken twice
        in one process differs by a few samples. The parent only initialises the library and never speaks; each
        child starts from that state, seeds ``rand`` and speaks once, so output is a pure function of the input.
        """
        r, w = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", DeprecationWarning
            )  # fork of a multi-threaded parent: the child only speaks
            pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                os.close(r)
                self.libc.srand(0)
                err, pcm, events = self._synth_here(text, voice, rate, pitch)
                head = json.dumps({"err": err, "events": events, "n": int(pcm.size)}).encode("utf-8")
                payload = struct.pack("<Q", len(head)) + head + pcm.tobytes()
                view = memoryview(payload)
                while view:
                    view = view[os.write(w, view) :]
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        chunks = []
        with os.fdopen(r, "rb") as fh:
            while True:
                block = fh.read(1 << 20)
                if not block:
                    break
                chunks.append(block)
        _, status = os.waitpid(pid, 0)
        raw = b"".join(chunks)
        if status != 0 or len(raw) < 8:
            raise InputError(f"espeak-ng failed to speak {text[:40]!r}; check that espeak-ng-data is installed")
        (size,) = struct.unpack("<Q", raw[:8])
        head = json.loads(raw[8 : 8 + size].decode("utf-8"))
        pcm = np.frombuffer(raw[8 + size :], dtype=np.int16).copy()
        return int(head["err"]), pcm, [(str(n), int(ms)) for n, ms in head["events"]]

    def synth(self, text: str, voice: str, rate: int, pitch: int | None) -> tuple[np.ndarray, list[tuple[str, int]]]:
        with self._lock:
            if hasattr(os, "fork"):
                err, pcm, events = self._synth_forked(text, voice, rate, pitch)
            else:  # no fork (Windows): nearly, but not bit-for-bit, reproducible
                self.libc.srand(0)
                err, pcm, events = self._synth_here(text, voice, rate, pitch)
        if err == 1:
            raise InputError(f"espeak-ng has no voice {voice!r}; list them with `espeak-ng --voices`")
        if err:
            raise InputError(f"espeak-ng could not speak {text[:40]!r}; check the text and the voice")
        return pcm, events


def espeak_available() -> bool:
    """True when libespeak-ng loads and initialises."""
    try:
        _Engine.get()
    except InputError:
        return False
    return True


def synthesize(text: str, *, voice: str = "en-us", rate: int = 160, pitch: int | None = None) -> Speech:
    """Speak ``text`` with an espeak-ng ``voice`` (e.g. ``en-us``, ``en-gb+f3``, ``de+m2``) at ``rate`` words per
    minute; returns 16 kHz audio and the phoneme timeline (the same arguments give the same output)."""
    if not text.strip():
        raise InputError("cannot synthesise empty text; give a sentence")
    if not 80 <= int(rate) <= 450:
        raise InputError(f"speech rate {rate} is outside espeak-ng's 80-450 words per minute")
    engine = _Engine.get()
    pcm, events = engine.synth(text, voice, rate, pitch)  # (T22,) int16, [(mnemonic, ms)]
    from fantasytalking.io.audio import resample

    audio = resample(pcm.astype(np.float32) / 32768.0, engine.sample_rate, SAMPLE_RATE)  # (T,)
    duration = audio.size / SAMPLE_RATE
    phonemes: list[tuple[str, float, float]] = []
    starts = [(name, min(max(ms / 1000.0, 0.0), duration)) for name, ms in events if name]
    if not starts or starts[0][1] > 0:
        starts.insert(0, ("_", 0.0))
    for i, (name, t0) in enumerate(starts):
        t1 = starts[i + 1][1] if i + 1 < len(starts) else duration
        t1 = max(t1, t0)
        if t1 > t0:
            phonemes.append((name, t0, t1))
    return Speech(audio=audio.astype(np.float32), phonemes=phonemes, text=text, voice=voice, rate=int(rate))
