"""Tests for fantasytalking.io.audio: loading/resampling/downmix, error paths, clip-length rule and warning."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from fantasytalking.errors import InputError
from fantasytalking.io.audio import (
    audio_duration,
    audio_overflow_warning,
    clip_frames,
    clip_seconds,
    load_audio,
    resample,
    trim_audio,
)
from fantasytalking.io.video import write_video


def _sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[int(np.argmax(spec))])


def _write_av_audio(path: Path, wave_ct: np.ndarray, sr: int, codec: str = "aac", fmt: str = "mp4") -> None:
    """Write (C, T) float audio with PyAV (e.g. an AAC .m4a), the way a phone recording would arrive."""
    layout = "mono" if wave_ct.shape[0] == 1 else "stereo"
    with av.open(str(path), mode="w", format=fmt) as c:
        s = c.add_stream(codec, rate=sr)
        s.layout = layout
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(wave_ct, dtype=np.float32), format="fltp", layout=layout
        )
        frame.sample_rate = sr
        frame.pts = 0
        for pkt in s.encode(frame):
            c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)


def _assert_one_line_naming(err: pytest.ExceptionInfo[InputError], path: Path) -> None:
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg


# ----------------------------------------------------------------------------- loading


def test_wav_44k_stereo_to_16k_mono(tmp_path: Path) -> None:
    sr, secs = 44100, 1.5
    left, right = _sine(440, secs, sr, 0.6), _sine(440, secs, sr, 0.2)
    p = tmp_path / "speech.wav"
    sf.write(p, np.stack([left, right], axis=1), sr, subtype="PCM_16")
    wav, orig = load_audio(p)
    assert orig == sr
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - secs * 16000) <= 1
    assert abs(_peak_hz(wav, 16000) - 440) < 2
    mid = wav[4000:-4000]
    assert abs(np.abs(mid).max() - 0.4) < 0.02  # channel mean: (0.6 + 0.2) / 2
    assert abs(audio_duration(wav, 16000) - secs) < 1e-3


@pytest.mark.parametrize(("suffix", "subtype"), [(".flac", "PCM_16"), (".ogg", "VORBIS"), (".wav", "FLOAT")])
def test_soundfile_formats(tmp_path: Path, suffix: str, subtype: str) -> None:
    p = tmp_path / f"a{suffix}"
    sf.write(p, _sine(300, 1.0, 22050), 22050, subtype=subtype)
    wav, orig = load_audio(p)
    assert orig == 22050
    assert abs(len(wav) - 16000) <= 2
    assert abs(_peak_hz(wav, 16000) - 300) < 2


def test_16k_mono_is_unchanged(tmp_path: Path) -> None:
    x = _sine(200, 0.5, 16000)
    p = tmp_path / "a.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    wav, orig = load_audio(p)
    assert orig == 16000
    assert np.array_equal(wav, x)


def test_m4a_stereo_via_pyav(tmp_path: Path) -> None:
    sr = 48000
    x = _sine(500, 1.0, sr)
    p = tmp_path / "voice.m4a"
    _write_av_audio(p, np.stack([x, x]), sr)
    wav, orig = load_audio(p)
    assert orig == sr
    assert abs(len(wav) / 16000 - 1.0) < 0.03
    assert abs(_peak_hz(wav, 16000) - 500) < 2


def test_audio_track_of_mp4_from_write_video(tmp_path: Path) -> None:
    frames = np.zeros((23, 32, 32, 3), dtype=np.uint8)
    frames[:, :, 16:] = 200
    p = write_video(tmp_path / "clip.mp4", frames, 23, audio=_sine(440, 2.0, 16000), sample_rate=16000)
    wav, orig = load_audio(p)
    assert orig == 16000
    assert abs(len(wav) / 16000 - 1.0) < 0.07  # trimmed to 23 frames / 23 fps by write_video
    assert abs(_peak_hz(wav, 16000) - 440) < 3


def test_mislabeled_file_falls_back_to_pyav(tmp_path: Path) -> None:
    p = tmp_path / "actually_aac.wav"
    _write_av_audio(p, _sine(440, 0.5, 16000)[None], 16000)
    wav, orig = load_audio(p)
    assert orig == 16000 and abs(len(wav) / 16000 - 0.5) < 0.07


def test_resample_odd_rates() -> None:
    x = _sine(440, 1.0, 44101)
    y = resample(x, 44101, 16000)
    assert abs(len(y) - 16000) <= 2
    assert abs(_peak_hz(y, 16000) - 440) < 2
    up = resample(_sine(440, 1.0, 8000), 8000, 16000)
    assert len(up) == 16000 and abs(_peak_hz(up, 16000) - 440) < 2


# ----------------------------------------------------------------------------- errors


def _bad_audio(tmp_path: Path, kind: str) -> Path:
    if kind == "garbage_wav":
        p = tmp_path / "noise.wav"
        p.write_bytes(b"RIFF\x00\x00garbage" * 20)
    elif kind == "garbage_m4a":
        p = tmp_path / "noise.m4a"
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif kind == "zero_bytes":
        p = tmp_path / "empty.mp3"
        p.write_bytes(b"")
    elif kind == "zero_length":
        p = tmp_path / "silent0.wav"
        sf.write(p, np.zeros(0, dtype=np.float32), 16000)
    elif kind == "nan":
        p = tmp_path / "nan.wav"
        x = _sine(440, 0.5, 16000)
        x[100] = np.nan
        sf.write(p, x, 16000, subtype="FLOAT")
    elif kind == "no_audio_stream":
        p = tmp_path / "silent_video.mp4"
        write_video(p, np.full((5, 16, 16, 3), 100, dtype=np.uint8), 23)
    elif kind == "image":
        p = tmp_path / "face.png"
        from PIL import Image

        Image.new("RGB", (16, 16), (10, 20, 30)).save(p)
    else:  # pragma: no cover
        raise AssertionError(kind)
    return p


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("garbage_wav", "cannot decode"),
        ("garbage_m4a", "cannot decode"),
        ("zero_bytes", "empty"),
        ("zero_length", "no samples"),
        ("nan", "non-finite"),
        ("no_audio_stream", "no audio stream"),
        ("image", "no audio stream"),
    ],
)
def test_load_audio_errors(tmp_path: Path, kind: str, pattern: str) -> None:
    path = _bad_audio(tmp_path, kind)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(InputError, match=pattern) as err:
        load_audio(path)
    _assert_one_line_naming(err, path)
    assert sorted(tmp_path.iterdir()) == before


def test_load_audio_missing_and_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found") as err:
        load_audio(tmp_path / "nope.wav")
    _assert_one_line_naming(err, tmp_path / "nope.wav")
    with pytest.raises(InputError, match="folder") as err:
        load_audio(tmp_path)
    _assert_one_line_naming(err, tmp_path)


# ----------------------------------------------------------------------------- clip rule


@pytest.mark.parametrize(
    ("duration", "fps", "max_frames", "expected"),
    [
        (3.5, 23, 81, 81),  # 80.5 // 4 = 20 -> 85 -> capped at 81
        (1.0, 23, 81, 25),  # 23 // 4 = 5 -> 25
        (0.1, 23, 81, 5),  # 2.3 // 4 = 0 -> 5
        (0.5, 23, 81, 13),
        (3.0, 23, 81, 73),
        (12.3, 23, 81, 81),
        (10.0, 25, 241, 241),
        (4.0, 16, 121, 69),
    ],
)
def test_clip_frames(duration: float, fps: float, max_frames: int, expected: int) -> None:
    n = clip_frames(duration, fps, max_frames)
    assert n == expected
    assert n == min(int(fps * duration // 4) * 4 + 5, max_frames)
    assert (n - 1) % 4 == 0


def test_clip_frames_rejects_unusable_input() -> None:
    with pytest.raises(InputError, match="too short"):
        clip_frames(0.01)
    with pytest.raises(InputError, match="too short"):
        clip_frames(0.0)
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(InputError):
            clip_frames(bad)
    with pytest.raises(InputError, match="4k\\+1"):
        clip_frames(2.0, 23, 80)
    with pytest.raises(InputError, match="fps"):
        clip_frames(2.0, 0)


def test_overflow_warning_and_trim() -> None:
    assert (
        audio_overflow_warning(12.3, 81, 23) == "audio is 12.3 s; this clip uses the first 3.5 s (81 frames at 23 fps)"
    )
    assert audio_overflow_warning(3.5, 81, 23) is None
    assert audio_overflow_warning(3.0, clip_frames(3.0), 23) is None
    assert (
        audio_overflow_warning(3.62, 81, 23) == "audio is 3.6 s; this clip uses the first 3.5 s (81 frames at 23 fps)"
    )
    assert audio_overflow_warning(3.56, 81, 23) is None  # less than one frame of audio unused
    # two decimals when one would print the same number twice
    assert (
        audio_overflow_warning(1.37, 81, 60) == "audio is 1.37 s; this clip uses the first 1.35 s (81 frames at 60 fps)"
    )
    assert clip_seconds(81, 23) == 81 / 23
    wav = np.zeros(12 * 16000, dtype=np.float32)
    assert len(trim_audio(wav, 16000, clip_seconds(81, 23))) == 56347  # int(81 / 23 * 16000), as the release
    assert len(trim_audio(wav[:100], 16000, 3.5)) == 100  # shorter audio is never padded


def test_truncated_wav_is_an_error_not_shorter_speech(tmp_path: Path) -> None:
    """A WAV cut short (a partial download or copy) is read by libsndfile without complaint: the speech would be
    silently shortened, so it is a one-line error; streaming placeholders (data size 0xFFFFFFFF) still load."""
    import soundfile as sf

    full = tmp_path / "full.wav"
    sf.write(full, (0.3 * np.sin(np.arange(32000) / 10)).astype(np.float32), 16000, subtype="PCM_16")
    data = full.read_bytes()
    half = tmp_path / "half.wav"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"truncated: .*half\.wav") as err:
        load_audio(half)
    assert "\n" not in str(err.value)
    stream = bytearray(data)
    at = stream.find(b"data")
    stream[at + 4 : at + 8] = b"\xff\xff\xff\xff"
    (tmp_path / "stream.wav").write_bytes(bytes(stream))
    assert load_audio(tmp_path / "stream.wav")[0].shape == (32000,)
    assert load_audio(full)[0].shape == (32000,)
