"""End to end on tiny random weights in the official layouts (CPU, seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from fantasytalking.errors import InputError
from fantasytalking.pipeline import FantasyTalkingPipeline
from fantasytalking.testing import make_tiny_weights

FAST = dict(num_inference_steps=2, max_edge=64, max_frames=9, progress=False)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("weights")
    return {
        "original": make_tiny_weights(root / "original", layout="original"),
        "diffusers": make_tiny_weights(root / "diffusers", layout="diffusers"),
    }


@pytest.fixture(scope="session")
def pipe(tiny_weights) -> FantasyTalkingPipeline:
    return FantasyTalkingPipeline.from_pretrained(tiny_weights["original"])


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> dict[str, Path]:
    from skimage import data

    root = tmp_path_factory.mktemp("inputs")
    image = root / "face.png"
    Image.fromarray(data.astronaut()).crop((100, 0, 356, 256)).save(image)
    t = np.arange(int(1.2 * 16000)) / 16000
    speech = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    audio = root / "speech.wav"
    sf.write(audio, speech, 16000)
    return {"image": image, "audio": audio}


def test_generates_frames_and_records_settings(pipe, inputs):
    out = pipe(inputs["image"], inputs["audio"], **FAST)
    # 1.2 s at 23 fps: min(int(23 * 1.2 // 4) * 4 + 5, 9) = 9 frames; 64 x 64 (square input)
    assert out.frames.shape == (9, 64, 64, 3) and out.frames.dtype == np.uint8
    assert out.settings.num_frames == 9 and (out.settings.width, out.settings.height) == (64, 64)
    assert out.audio.shape == (int(9 / 23 * 16000),)  # the audio is cut to [0, N / fps]
    assert out.settings.notes and "first 0.4 s (9 frames at 23 fps)" in out.settings.notes[0]


def test_seed_is_deterministic_and_audio_matters(pipe, inputs):
    a = pipe(inputs["image"], inputs["audio"], seed=3, **FAST).frames
    b = pipe(inputs["image"], inputs["audio"], seed=3, **FAST).frames
    no_audio = pipe(inputs["image"], inputs["audio"], seed=3, audio_scale=0.0, audio_cfg=1.0, **FAST).frames
    other_seed = pipe(inputs["image"], inputs["audio"], seed=4, **FAST).frames
    assert np.array_equal(a, b)
    assert not np.array_equal(a, no_audio)
    assert not np.array_equal(a, other_seed)


def test_both_layouts_generate_the_same_video(tiny_weights, pipe, inputs):
    other = FantasyTalkingPipeline.from_pretrained(tiny_weights["diffusers"])
    a = pipe(inputs["image"], inputs["audio"], **FAST).frames
    b = other(inputs["image"], inputs["audio"], **FAST).frames
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # fp32 conversions agree to rounding


@pytest.mark.parametrize(
    ("kwargs", "passes"),
    [({}, 3 * 3), ({"prompt_cfg": 1.0}, 2 * 3), ({"audio_guidance_steps": (0, 1)}, 3 + 3 + 2)],
)
def test_transformer_passes_per_step(pipe, inputs, monkeypatch, kwargs, passes):
    calls = []
    original = type(pipe.transformer).forward

    def counting(self, *args, **kw):
        calls.append(sorted((kw.get("branches") or {}).keys()))
        return original(self, *args, **kw)

    monkeypatch.setattr(type(pipe.transformer), "forward", counting)
    pipe(inputs["image"], inputs["audio"], **{**FAST, "num_inference_steps": 3, **kwargs})
    assert len(calls) == passes


def test_save_writes_mp4_and_sidecar_atomically(pipe, inputs, tmp_path):
    from fantasytalking.io import probe_video, sidecar_path

    out = pipe(inputs["image"], inputs["audio"], **FAST)
    path = pipe.save(out, tmp_path / "clip.mp4")
    info = probe_video(path)
    assert info["num_frames"] == 9 and info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert abs(info["audio_duration"] - 9 / 23) < 0.07
    import json

    record = json.loads(sidecar_path(path).read_text())
    assert record["settings"]["seed"] == 1111 and record["frames"] == 9
    assert any(p.endswith("fantasytalking_model.ckpt") for p in record["weights"])
    with pytest.raises(InputError, match="exists"):
        pipe.save(out, path)


def test_bad_guidance_range(pipe, inputs):
    with pytest.raises(InputError, match="audio guidance steps"):
        pipe(inputs["image"], inputs["audio"], audio_guidance_steps=(1, 5), **FAST)


def test_frame_and_clip_modes_give_different_videos(pipe, inputs):
    audio = pipe.conditioning["audio"]
    frame = pipe(inputs["image"], inputs["audio"], **FAST).frames
    audio.mode = "clip"
    try:
        clip = pipe(inputs["image"], inputs["audio"], **FAST).frames
    finally:
        audio.mode = "frame"
    assert frame.shape == clip.shape and not np.array_equal(frame, clip)


def test_image_encoder_sees_the_wan_resize(pipe):
    image = torch.rand(1, 3, 64, 48) * 2 - 1
    tokens = pipe.encode_image(image, torch.device("cpu"), torch.float32)
    size = pipe.image_encoder.config.image_size // pipe.image_encoder.config.patch_size
    assert tokens.shape == (1, size * size + 1, pipe.image_encoder.config.hidden_size)


def test_model_offload_hooks_give_the_same_video(tiny_weights, inputs):
    """diffusers' model offload (accelerate hooks) on the CPU device: same frames, every model hooked."""
    plain = FantasyTalkingPipeline.from_pretrained(tiny_weights["original"])
    expected = plain(inputs["image"], inputs["audio"], **FAST).frames
    plain.enable_model_cpu_offload(device="cpu")
    hooked = [name for name in ("text_encoder", "image_encoder", "conditioning", "transformer", "vae")
              if hasattr(getattr(plain, name), "_hf_hook")]
    assert hooked == ["text_encoder", "image_encoder", "conditioning", "transformer", "vae"]
    assert np.array_equal(plain(inputs["image"], inputs["audio"], **FAST).frames, expected)


def test_face_and_motion_conditioners_at_inference(tiny_weights, inputs):
    """The paper's full model: identity tokens from the portrait's face and motion intensities."""
    from fantasytalking.conditioning import FaceConditioner, MotionConditioner

    full = FantasyTalkingPipeline.from_pretrained(tiny_weights["original"])
    base = full(inputs["image"], inputs["audio"], **FAST).frames
    face = FaceConditioner(face_dim=128, dim=16, num_queries=4, num_layers=1, num_heads=2)
    full.transformer.add_token_branch("face", face.token_dim)
    full.conditioning.add(face)
    full.conditioning.add(MotionConditioner(embed_dim=full.transformer.inner_dim, hidden_dim=8))
    # freshly zero-initialised branches change nothing
    assert np.array_equal(full(inputs["image"], inputs["audio"], **FAST).frames, base)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in full.transformer.processors:
            p.branches["face"].k_proj.weight.normal_()
            p.branches["face"].v_proj.weight.normal_()
        full.conditioning["motion"].out[1].weight.normal_()
    calm = full(inputs["image"], inputs["audio"], face_motion=0.1, body_motion=0.1, **FAST)
    lively = full(inputs["image"], inputs["audio"], face_motion=1.0, body_motion=1.0, **FAST)
    assert (calm.settings.face_motion, lively.settings.body_motion) == (0.1, 1.0)
    assert not np.array_equal(calm.frames, lively.frames) and not np.array_equal(calm.frames, base)
    # the default request (0.5, 0.5) is the same generation as no request, at every motion gain (demo_targets.py
    # takes its "motion 0.5" row from the own-speech row on this ground)
    default = full(inputs["image"], inputs["audio"], **FAST)
    level = full.conditioning["motion"].default
    assert level == (0.5, 0.5) and not np.array_equal(default.frames, calm.frames)
    for gain in (1.0, 3.0):
        requested = full(inputs["image"], inputs["audio"], face_motion=level[0], body_motion=level[1],
                         motion_gain=gain, **FAST)  # fmt: skip
        assert np.array_equal(requested.frames, default.frames)
    batched = full(inputs["image"], inputs["audio"], face_motion=1.0, body_motion=1.0, batch_passes=True, **FAST)
    assert np.abs(batched.frames.astype(int) - lively.frames.astype(int)).max() <= 1
    with pytest.raises(InputError, match=r"motion intensities must be in \[0, 1\]"):
        full(inputs["image"], inputs["audio"], face_motion=1.5, **FAST)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8))
    with pytest.raises(InputError, match="no face"):
        full(noise, inputs["audio"], **FAST)


def test_face_image_gives_the_face_conditioner_another_portrait(tiny_weights, inputs, tmp_path):
    """A continuation: the first frame is one image, the identity tokens come from another (the original portrait)."""
    from fantasytalking.conditioning import FaceConditioner

    full = FantasyTalkingPipeline.from_pretrained(tiny_weights["original"])
    face = FaceConditioner(face_dim=128, dim=16, num_queries=4, num_layers=1, num_heads=2)
    full.transformer.add_token_branch("face", face.token_dim)
    full.conditioning.add(face)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in full.transformer.processors:
            p.branches["face"].k_proj.weight.normal_()
            p.branches["face"].v_proj.weight.normal_()
    embedded: list[np.ndarray] = []
    embed = face.embed
    face.embed = lambda rgb, landmarks: (embedded.append(rgb), embed(rgb, landmarks))[1]
    mirrored = tmp_path / "mirrored.png"
    Image.open(inputs["image"]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored)

    own = full(inputs["image"], inputs["audio"], **FAST)
    other = full(inputs["image"], inputs["audio"], face_image=mirrored, **FAST)
    same = full(inputs["image"], inputs["audio"], face_image=Image.open(inputs["image"]), **FAST)
    image, mirror = np.asarray(Image.open(inputs["image"]).convert("RGB")), np.asarray(Image.open(mirrored))
    assert [e.shape for e in embedded] == [image.shape] * 3
    assert np.array_equal(embedded[0], image) and np.array_equal(embedded[1], mirror)
    assert np.array_equal(embedded[2], image)
    assert (own.settings.face_image, other.settings.face_image, same.settings.face_image) == (
        None, str(mirrored), "an image object")  # fmt: skip
    assert not np.array_equal(other.frames, own.frames)  # the identity tokens changed, the first frame did not
    assert np.array_equal(same.frames, own.frames)
    # a continuation as the quickstart writes it: an output's frame as the image, arrays as well as files
    onward = full(own.frames[-1], inputs["audio"], face_image=image, **FAST)
    assert np.array_equal(embedded[-1], image) and onward.frames.shape == own.frames.shape
    assert np.array_equal(full(image, inputs["audio"], **FAST).frames, own.frames)  # an array is the file's pixels
    with pytest.raises(InputError, match="needs at least"):
        full(inputs["image"], inputs["audio"], face_image=Image.new("RGB", (20, 20)), **FAST)
    with pytest.raises(InputError, match=r"uint8 RGB of shape \(H, W, 3\)"):
        full(inputs["image"], inputs["audio"], face_image=image.astype(np.float32), **FAST)
    noise = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    with pytest.raises(InputError, match=r"no face found in face_image \(an image object\)"):
        full(inputs["image"], inputs["audio"], face_image=noise, **FAST)
    # face_scale: the branch weight l2 (None: the conditioner's own, 0.5), 0 switches the identity tokens off
    assert own.settings.face_scale == 0.5 == face.scale  # the weight used, in the JSON sidecar
    as_trained = full(inputs["image"], inputs["audio"], face_scale=0.5, **FAST)
    off = full(inputs["image"], inputs["audio"], face_scale=0.0, **FAST)
    strong = full(inputs["image"], inputs["audio"], face_scale=1.5, **FAST)
    assert np.array_equal(as_trained.frames, own.frames) and as_trained.settings.face_scale == 0.5
    assert not np.array_equal(off.frames, own.frames) and not np.array_equal(strong.frames, own.frames)
    assert not np.array_equal(strong.frames, off.frames)
    face.scale = 0.0  # the conditioner switched off, as demo_targets.py's face-off row does
    try:
        switched_off = full(inputs["image"], inputs["audio"], **FAST)
        assert np.array_equal(switched_off.frames, off.frames) and switched_off.settings.face_scale == 0.0
    finally:
        face.scale = 0.5
    for bad in (-0.1, float("nan")):
        with pytest.raises(InputError, match="face scale must be a finite number >= 0"):
            full(inputs["image"], inputs["audio"], face_scale=bad, **FAST)
        with pytest.raises(InputError, match=r"motion gain must be a finite number >= 0 \(1: as trained\), got"):
            full(inputs["image"], inputs["audio"], motion_gain=bad, **FAST)  # refused before any input is read


def test_face_image_needs_a_face_conditioner(pipe, inputs):
    with pytest.raises(InputError, match="no face conditioner"):
        pipe(inputs["image"], inputs["audio"], face_image=inputs["image"], **FAST)
    with pytest.raises(InputError, match=r"no face conditioner.*face_scale"):
        pipe(inputs["image"], inputs["audio"], face_scale=1.0, **FAST)


def test_motion_flags_need_a_motion_conditioner(pipe, inputs):
    with pytest.raises(InputError, match="no motion conditioner"):
        pipe(inputs["image"], inputs["audio"], face_motion=0.5, **FAST)


@pytest.mark.parametrize("kwargs", [{}, {"prompt_cfg": 1.0}, {"audio_guidance_steps": (0, 0)}])
def test_batched_guidance_passes_match_sequential(pipe, inputs, kwargs):
    sequential = pipe(inputs["image"], inputs["audio"], **FAST, **kwargs).frames.astype(int)
    batched = pipe(inputs["image"], inputs["audio"], batch_passes=True, **FAST, **kwargs).frames.astype(int)
    assert np.abs(sequential - batched).max() <= 1


def test_segmented_generation_covers_the_speech_and_matches_one_clip_when_short(pipe, inputs):
    # 1.2 s -> min(int(23 * 1.2 // 4) * 4 + 5, 33) = 29 frames, made of 5-frame clips: ceil(28 / 4) = 7 clips.
    settings = dict(FAST, max_frames=33)
    out = pipe(inputs["image"], inputs["audio"], segment_frames=5, **settings)
    assert out.frames.shape[0] == 29 == out.settings.num_frames
    assert (out.settings.segment_frames, out.settings.segments) == (5, 7)
    assert out.audio.shape == (int(1.2 * 16000),)  # all the speech (shorter than the 29 frames)
    # Speech that fits in one segment: exactly the single-clip result.
    one = pipe(inputs["image"], inputs["audio"], segment_frames=0, **FAST).frames
    same = pipe(inputs["image"], inputs["audio"], segment_frames=9, **FAST).frames
    np.testing.assert_array_equal(one, same)


@pytest.mark.parametrize("bad", [4, 3, 10])
def test_segment_frames_must_be_4k_plus_1(pipe, inputs, bad):
    with pytest.raises(InputError, match="4k\\+1"):
        pipe(inputs["image"], inputs["audio"], segment_frames=bad, **FAST)


def _fake_pipe_and_output():
    """What `FantasyTalkingPipeline.save` reads, without building a model."""
    from types import SimpleNamespace

    from fantasytalking.pipeline import FantasyTalkingOutput, GenerationSettings

    fake = SimpleNamespace(source_files=[], audio_conditioner=SimpleNamespace(mode="frame"),
                           transformer=SimpleNamespace(num_layers=1, inner_dim=8,
                                                       transformer=SimpleNamespace(dtype=torch.float32)))  # fmt: skip
    output = FantasyTalkingOutput(frames=np.zeros((5, 32, 32, 3), np.uint8), audio=np.zeros(4000, np.float32),
                                  sample_rate=16000, fps=23, settings=GenerationSettings())  # fmt: skip
    return fake, output


def test_save_never_replaces_an_existing_sidecar_without_overwrite(tmp_path):
    fake, output = _fake_pipe_and_output()
    (tmp_path / "out.json").write_text("precious")
    with pytest.raises(InputError, match=r"out\.json.*--overwrite"):
        FantasyTalkingPipeline.save(fake, output, tmp_path / "out.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    assert (tmp_path / "out.json").read_text() == "precious"


def test_failed_save_with_overwrite_keeps_the_old_video_and_sidecar(tmp_path):
    fake, output = _fake_pipe_and_output()
    (tmp_path / "out.mp4").write_bytes(b"old video")
    (tmp_path / "out.json").write_text("old json")
    output.settings.notes.append(object())  # a sidecar that cannot be written (like a full disk at that moment)
    with pytest.raises(TypeError):
        FantasyTalkingPipeline.save(fake, output, tmp_path / "out.mp4", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.mp4"]
    assert (tmp_path / "out.mp4").read_bytes() == b"old video" and (tmp_path / "out.json").read_text() == "old json"


def test_pin_first_frame_ends_on_the_portraits_latent_whatever_the_noise(pipe, inputs):
    """pin_first_frame: latent frame 0 is held on the portrait's latent (noised to each step), so two seeds end
    on the same frame-0 latent, the condition's own, while the other frames differ; off, frame 0 differs too."""
    captured: list[torch.Tensor] = []
    decode = pipe.decode
    pipe.decode = lambda latents: (captured.append(latents.clone()), decode(latents))[1]
    encode = pipe.encode_condition
    conditions: list[torch.Tensor] = []
    pipe.encode_condition = lambda *a, **k: (conditions.append(encode(*a, **k)), conditions[-1])[1]
    try:
        pinned = [pipe(inputs["image"], inputs["audio"], pin_first_frame=True, **{**FAST, "seed": s}) for s in (1, 2)]
        free = [pipe(inputs["image"], inputs["audio"], **{**FAST, "seed": s}) for s in (1, 2)]
    finally:
        del pipe.decode, pipe.encode_condition
    z = captured[0].shape[1]
    portrait = conditions[0][:, -z:, :1]  # (1, z, 1, h, w): the portrait's normalised latent
    torch.testing.assert_close(captured[0][:, :, :1], portrait.to(captured[0].dtype))
    assert torch.equal(captured[0][:, :, :1], captured[1][:, :, :1])
    assert not torch.equal(captured[0][:, :, 1:], captured[1][:, :, 1:])
    assert not torch.equal(captured[2][:, :, :1], captured[3][:, :, :1])
    assert pinned[0].settings.pin_first_frame and not free[0].settings.pin_first_frame
