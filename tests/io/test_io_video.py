"""Tests for fantasytalking.io.video: mp4 round trip, audio trimming, atomic writes, path checks, JSON sidecar."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch

from fantasytalking.errors import InputError
from fantasytalking.io.video import (
    check_output_path,
    probe_video,
    read_video,
    sidecar_path,
    video_header,
    write_json_atomic,
    write_video,
)

# One AAC frame is 1024 samples (64 ms at 16 kHz): durations are compared at that granularity.
AAC_TOL_S = 0.07


def _frames(n: int = 29, h: int = 64, w: int = 96) -> np.ndarray:
    """Smooth moving pattern (compresses well, so decoded frames stay close to the input)."""
    x = np.linspace(0, 1, w)[None, :]
    y = np.linspace(0, 1, h)[:, None]
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        out[i, ..., 0] = 40 + 170 * x + 0 * y
        out[i, ..., 1] = 40 + 170 * y + 0 * x
        out[i, ..., 2] = 60 + 4 * i
    return out


def _sine(freq: float, seconds: float, sr: int) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- round trip


def test_round_trip_with_longer_audio_trimmed(tmp_path: Path) -> None:
    frames = _frames(29)
    out = write_video(tmp_path / "out.mp4", frames, 23, audio=_sine(440, 3.0, 16000), sample_rate=16000)
    assert out == tmp_path / "out.mp4"
    assert _leftovers(tmp_path) == ["out.mp4"]

    info = probe_video(out)
    assert info["video_codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["audio_codec"] == "aac" and info["sample_rate"] == 16000 and info["audio_channels"] == 1
    assert (info["width"], info["height"], info["num_frames"]) == (96, 64, 29)
    assert info["fps"] == pytest.approx(23.0)
    assert info["video_duration"] == pytest.approx(29 / 23)
    assert abs(info["audio_duration"] - 29 / 23) < AAC_TOL_S  # 3 s of audio trimmed to the video

    video, fps, audio, sr = read_video(out)
    assert video.shape == frames.shape and video.dtype == np.uint8
    assert fps == pytest.approx(23.0)
    assert np.abs(video.astype(int) - frames.astype(int)).mean() < 3.0
    assert sr == 16000 and audio is not None and audio.dtype == np.float32
    assert abs(len(audio) / sr - 29 / 23) < AAC_TOL_S
    spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    assert abs(np.fft.rfftfreq(len(audio), 1 / sr)[np.argmax(spec)] - 440) < 3


def test_shorter_audio_is_not_padded(tmp_path: Path) -> None:
    out = write_video(tmp_path / "o.mp4", _frames(46), 23, audio=_sine(440, 0.5, 16000))
    info = probe_video(out)
    assert info["num_frames"] == 46
    assert abs(info["audio_duration"] - 0.5) < AAC_TOL_S  # video is 2 s, audio stays 0.5 s


def test_no_audio_and_tensor_input(tmp_path: Path) -> None:
    frames = torch.from_numpy(_frames(9))
    out = write_video(tmp_path / "silent.mp4", frames, 23)
    video, _fps, audio, sr = read_video(out)
    assert video.shape == (9, 64, 96, 3)
    assert audio is None and sr is None
    assert probe_video(out)["audio_codec"] is None


@pytest.mark.parametrize("fps", [29.97, Fraction(30000, 1001), 12.5, 25])
def test_fractional_fps(tmp_path: Path, fps: float | Fraction) -> None:
    out = write_video(tmp_path / "f.mp4", _frames(12, 32, 32), fps, audio=_sine(300, 2.0, 44100), sample_rate=44100)
    info = probe_video(out)
    assert info["num_frames"] == 12
    assert info["fps"] == pytest.approx(float(fps), rel=1e-4)
    assert abs(info["audio_duration"] - 12 / float(fps)) < AAC_TOL_S


def test_odd_size_is_padded_to_even(tmp_path: Path) -> None:
    frames = _frames(5, 33, 47)
    video, *_ = read_video(write_video(tmp_path / "odd.mp4", frames, 23))
    assert video.shape == (5, 34, 48, 3)
    assert np.abs(video[:, :33, :47].astype(int) - frames.astype(int)).mean() < 3.0


def test_unsupported_aac_rate_is_resampled(tmp_path: Path) -> None:
    out = write_video(tmp_path / "r.mp4", _frames(23, 32, 32), 23, audio=_sine(440, 1.0, 37800), sample_rate=37800)
    info = probe_video(out)
    assert info["sample_rate"] == 48000
    assert abs(info["audio_duration"] - 1.0) < AAC_TOL_S


def test_bad_frames_rejected_before_writing(tmp_path: Path) -> None:
    for bad in (
        np.zeros((3, 16, 16), np.uint8),
        np.zeros((3, 16, 16, 3), np.float32),
        np.zeros((0, 16, 16, 3), np.uint8),
    ):
        with pytest.raises(InputError):
            write_video(tmp_path / "x.mp4", bad, 23)
    with pytest.raises(InputError, match="fps"):
        write_video(tmp_path / "x.mp4", _frames(3), 0)
    with pytest.raises(InputError, match="mono"):
        write_video(tmp_path / "x.mp4", _frames(3), 23, audio=np.zeros((2, 1000), np.float32))
    assert _leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- output path checks


def test_existing_output_without_overwrite_is_untouched(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    target.write_bytes(b"precious")
    with pytest.raises(InputError, match="already exists") as err:
        write_video(target, _frames(5), 23, audio=_sine(440, 1.0, 16000))
    assert "\n" not in str(err.value) and str(target) in str(err.value)
    assert target.read_bytes() == b"precious"
    assert _leftovers(tmp_path) == ["out.mp4"]

    write_video(target, _frames(5), 23, overwrite=True)
    assert probe_video(target)["num_frames"] == 5
    assert _leftovers(tmp_path) == ["out.mp4"]


def test_check_output_path_errors(tmp_path: Path) -> None:
    assert check_output_path(tmp_path / "new.mp4", overwrite=False) == tmp_path / "new.mp4"
    with pytest.raises(InputError, match="create it first"):
        check_output_path(tmp_path / "missing" / "out.mp4", overwrite=False)
    with pytest.raises(InputError, match=r"must end in \.mp4"):
        check_output_path(tmp_path / "out.avi", overwrite=True)
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(InputError, match="folder"):
        check_output_path(tmp_path / "dir.mp4", overwrite=True)
    with pytest.raises(InputError, match="create it first"):
        write_video(tmp_path / "missing" / "out.mp4", _frames(3), 23)
    assert _leftovers(tmp_path) == ["dir.mp4"]


# ----------------------------------------------------------------------------- atomicity


class _FailingContainer:
    """Wraps a real PyAV output container and fails on the N-th mux, like a full disk mid-write."""

    def __init__(self, real: Any, fail_at: int, exc: BaseException) -> None:
        self._real, self._fail_at, self._exc, self._count = real, fail_at, exc, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __enter__(self) -> _FailingContainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._real.close()

    def mux(self, packet: Any) -> None:
        self._count += 1
        if self._count >= self._fail_at:
            raise self._exc
        self._real.mux(packet)


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize("existing", [False, True])
def test_failure_mid_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException, existing: bool
) -> None:
    target = tmp_path / "out.mp4"
    if existing:
        target.write_bytes(b"old video")
    real_open = av.open
    seen: list[Path] = []

    def failing_open(file: Any, mode: str = "r", **kw: Any) -> Any:
        container = real_open(file, mode, **kw)
        if mode == "w":
            seen.append(Path(file))
            return _FailingContainer(container, fail_at=3, exc=exc)
        return container

    monkeypatch.setattr(av, "open", failing_open)
    with pytest.raises(type(exc)):
        write_video(target, _frames(20), 23, audio=_sine(440, 1.0, 16000), overwrite=True)
    assert seen and seen[0].parent == tmp_path and seen[0].name.startswith(".")  # wrote to a temp file next to it
    assert _leftovers(tmp_path) == (["out.mp4"] if existing else [])
    if existing:
        assert target.read_bytes() == b"old video"


def test_failure_at_publish_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.mp4"
    target.write_bytes(b"old video")

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        write_video(target, _frames(5), 23, overwrite=True)
    assert _leftovers(tmp_path) == ["out.mp4"]
    assert target.read_bytes() == b"old video"


# ----------------------------------------------------------------------------- JSON sidecar and reading errors


def test_sidecar_json(tmp_path: Path) -> None:
    video = tmp_path / "talk.mp4"
    side = sidecar_path(video)
    assert side == tmp_path / "talk.json"
    meta = {"seed": np.int64(1111), "fps": Fraction(23), "image": tmp_path / "face.png", "cfg": np.array([5.0, 4.5])}
    assert write_json_atomic(side, meta) == side
    assert json.loads(side.read_text()) == {
        "seed": 1111,
        "fps": 23.0,
        "image": str(tmp_path / "face.png"),
        "cfg": [5.0, 4.5],
    }
    write_json_atomic(side, {"v": 2})
    assert json.loads(side.read_text()) == {"v": 2}
    with pytest.raises(TypeError):
        write_json_atomic(side, {"bad": object()})
    assert json.loads(side.read_text()) == {"v": 2}  # old sidecar intact
    with pytest.raises(InputError, match="create it first"):
        write_json_atomic(tmp_path / "nope" / "x.json", {})
    assert _leftovers(tmp_path) == ["talk.json"]


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_video(tmp_path / "none.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(InputError, match=r"junk\.mp4") as err:
        probe_video(junk)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match=r"junk\.mp4"):
        read_video(junk)


def test_video_header_reads_rate_size_and_audio_without_decoding(tmp_path: Path) -> None:
    with_audio, silent = tmp_path / "a.mp4", tmp_path / "s.mp4"
    write_video(with_audio, _frames(12), 23, audio=_sine(220, 12 / 23, 16000), sample_rate=16000)
    write_video(silent, _frames(12), 25)
    assert video_header(with_audio) == {"fps": 23.0, "width": 96, "height": 64, "has_audio": True}
    assert video_header(silent)["has_audio"] is False and video_header(silent)["fps"] == 25.0
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(InputError, match=r"junk\.mp4") as err:
        video_header(junk)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="not found"):
        video_header(tmp_path / "none.mp4")


# ----------------------------------------------------------------------------- video + sidecar as one write


def test_video_with_sidecar_refuses_an_existing_sidecar_without_overwrite(tmp_path: Path) -> None:
    from fantasytalking.io.video import check_outputs, write_video_with_sidecar

    target = tmp_path / "out.mp4"
    (tmp_path / "out.json").write_text("precious")
    with pytest.raises(InputError, match=r"already exists: .*out\.json.*--overwrite") as err:
        write_video_with_sidecar(target, _frames(5), 23, {"v": 1})
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match=r"out\.json"):
        check_outputs(target)
    assert _leftovers(tmp_path) == ["out.json"] and (tmp_path / "out.json").read_text() == "precious"
    write_video_with_sidecar(target, _frames(5), 23, {"v": 1}, overwrite=True)
    assert json.loads((tmp_path / "out.json").read_text()) == {"v": 1} and probe_video(target)["num_frames"] == 5
    assert _leftovers(tmp_path) == ["out.json", "out.mp4"]


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_video_with_sidecar_failing_at_the_sidecar_keeps_the_old_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    """With --overwrite, a failure after the new video is in place (publishing the sidecar) restores the old video:
    a failed run loses nothing."""
    from fantasytalking.io.video import write_video_with_sidecar

    target = tmp_path / "out.mp4"
    target.write_bytes(b"old video")
    (tmp_path / "out.json").write_text("old json")
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst).name == "out.json":
            raise exc
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(type(exc)):
        write_video_with_sidecar(target, _frames(5), 23, {"v": 1}, overwrite=True)
    assert target.read_bytes() == b"old video" and (tmp_path / "out.json").read_text() == "old json"
    assert _leftovers(tmp_path) == ["out.json", "out.mp4"]


def test_video_with_sidecar_unserialisable_record_writes_nothing(tmp_path: Path) -> None:
    from fantasytalking.io.video import write_video_with_sidecar

    target = tmp_path / "out.mp4"
    target.write_bytes(b"old video")
    with pytest.raises(TypeError):
        write_video_with_sidecar(target, _frames(5), 23, {"bad": object()}, overwrite=True)
    assert target.read_bytes() == b"old video" and _leftovers(tmp_path) == ["out.mp4"]


def _x264_settings(path: Path) -> str:
    """The option string libx264 writes into the stream (its SEI user data)."""
    data = path.read_bytes()
    start = data.find(b"x264 - core")
    assert start >= 0, "no x264 SEI in the stream"
    return data[start : data.find(b"\x00", start)].decode("ascii", "replace")


def test_same_frames_give_the_same_file_whatever_the_heap_holds(tmp_path: Path) -> None:
    """x264's AVX-512 macroblock-tree code read past a row of macroblocks into uninitialised memory when the width
    in macroblocks was not a multiple of 8 (96 px: 6): SynthTalk's shards differed from run to run. With mbtree
    off the bytes do not depend on what the heap holds (glibc's M_PERTURB fills freed and new blocks with junk;
    on a CPU without AVX-512 the old code passed this too, so the option itself is checked as well)."""
    import ctypes
    import ctypes.util

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (12, 12, 3)).astype(np.uint8)
    frames = np.stack([np.roll(np.kron(base, np.ones((8, 8, 1), np.uint8)), 2 * i, axis=1) for i in range(33)])
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name) if libc_name else None
    m_perturb = -6  # glibc's mallopt parameter
    written = []
    for junk in (0x00, 0x5A, 0xC3):
        if libc is not None and hasattr(libc, "mallopt"):
            libc.mallopt(m_perturb, junk)
        try:
            path = write_video(tmp_path / f"j{junk}.mp4", frames, 23)
        finally:
            if libc is not None and hasattr(libc, "mallopt"):
                libc.mallopt(m_perturb, 0)
        written.append(path.read_bytes())
    assert written[1] == written[0] and written[2] == written[0]
    assert " mbtree=0 " in _x264_settings(tmp_path / "j0.mp4")


def _decode_in_child(fn_name: str, source: bytes | Path, q: Any) -> None:
    """Puts the decoded frames' shape: of mp4 bytes (``decode_mp4``) or of a file (``read_video``)."""
    from fantasytalking.data.format import decode_mp4

    q.put(decode_mp4(source).shape if fn_name == "decode_mp4" else read_video(source)[0].shape)


@pytest.mark.parametrize("fn_name", ["decode_mp4", "read_video"])
def test_decoding_in_a_forked_process_after_decoding_in_the_parent(tmp_path, fn_name):
    """DataLoader workers are forked: a decode there must not wait for scaler threads only the parent has.

    The parent first converts frames the plain PyAV way (``frame.to_ndarray(format="rgb24")``), as any caller may,
    which leaves PyAV's per-thread scaler with slice threads in the parent. With PyAV 18.1.1 a child converting
    through that inherited scaler blocks forever (the CI hang this guards against); ``frame_to_rgb24`` does not.
    """
    import multiprocessing

    path = write_video(tmp_path / "a.mp4", _frames(5), fps=23)
    data = path.read_bytes()
    with av.open(str(path)) as container:
        warm = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    assert len(warm) == 5
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    child = ctx.Process(target=_decode_in_child, args=(fn_name, data if fn_name == "decode_mp4" else path, q))
    child.start()
    child.join(60)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung, "decoding in a forked process hung on the parent's scaler threads"
    assert child.exitcode == 0 and q.get(timeout=5) == (5, 64, 96, 3)


def test_frame_to_rgb24_matches_pyav_conversion(tmp_path):
    from av.video.reformatter import VideoReformatter

    from fantasytalking.io.video import frame_to_rgb24

    path = write_video(tmp_path / "a.mp4", _frames(3), fps=23)
    scaler = VideoReformatter()
    with av.open(str(path)) as container:
        for f in container.decode(container.streams.video[0]):
            ours = frame_to_rgb24(f, scaler)
            assert ours.dtype == np.uint8 and ours.shape == (64, 96, 3)
            np.testing.assert_array_equal(ours, f.to_ndarray(format="rgb24"))
            assert frame_to_rgb24(f, scaler, width=48, height=32).shape == (32, 48, 3)
