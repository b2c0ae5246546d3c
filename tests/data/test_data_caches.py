"""Optional feature caches: wav2vec2 features and Wan VAE latents, computed with tiny random models built here."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch

from fantasytalking.data import TalkingClipDataModule, preprocess
from fantasytalking.data import format as fmt
from fantasytalking.face import DlibLandmarker
from fantasytalking.io import write_video

SIZE, FRAMES, FPS = 64, 17, 23.0


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A wav2vec2 folder and a Wan folder in diffusers layout (``vae/``), random weights, tiny sizes."""
    from diffusers import AutoencoderKLWan
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from fantasytalking.testing.tiny import TINY_VAE, TINY_WAV2VEC2

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    wav2vec = root / "wav2vec2"
    Wav2Vec2Model(Wav2Vec2Config(**TINY_WAV2VEC2)).save_pretrained(wav2vec)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=False).save_pretrained(
        wav2vec
    )
    wan = root / "wan"
    vae = AutoencoderKLWan(**TINY_VAE)
    vae.save_pretrained(wan / "vae")
    return wav2vec, wan, vae


@pytest.fixture(scope="module")
def talking_video(tmp_path_factory):
    from skimage.data import astronaut

    root = tmp_path_factory.mktemp("video")
    img = astronaut()[0:400, 56:456]
    rng = np.random.default_rng(0)
    frames = np.stack([np.roll(img, (i % 3, i % 5), axis=(0, 1)) for i in range(25)])
    audio = 0.2 * np.sin(np.arange(16000) * 2 * np.pi * 180 / 16000) + 0.01 * rng.standard_normal(16000)
    path = root / "talk.mp4"
    write_video(path, frames, 25, audio=audio.astype(np.float32), sample_rate=16000)
    return path


def test_cached_features_and_latents(tiny_models, talking_video, tmp_path):
    wav2vec, wan, vae = tiny_models
    out = tmp_path / "shards"
    report = preprocess(
        [talking_video], out, landmarker=DlibLandmarker(), size=SIZE, num_frames=FRAMES, fps=FPS, face_size=112,
        landmarks="dlib", cache_features=wav2vec, cache_latents=wan,
    )  # fmt: skip
    assert report.clips_written == 1
    with tarfile.open(out / "shard-000000.tar") as tar:
        members = {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in tar}
    meta = json.loads(members[fmt.META])
    feats = fmt.from_npy(members[fmt.WAV2VEC])
    tokens = (round(FRAMES * 16000 / FPS) - 400) // 320 + 1  # wav2vec2's conv stack: 25 ms window, 20 ms hop
    assert feats.dtype == np.float16 and feats.shape == (tokens, 32) and meta["wav2vec"]["shape"] == [tokens, 32]
    lat = fmt.from_npy(members[fmt.LATENTS])
    assert lat.dtype == np.float16 and lat.shape == (16, fmt.latent_frames(FRAMES), SIZE // 8, SIZE // 8)
    assert np.isfinite(lat).all() and meta["latents"]["shape"] == list(lat.shape)
    # the stored latents are the normalised posterior mode of the clip frames
    frames = fmt.decode_mp4(members[fmt.VIDEO])
    x = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
    with torch.no_grad():
        z = vae.eval().encode(x).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    ref = ((z - mean) / std)[0].numpy()
    # the cache was computed before H.264 compression: close, not equal
    assert np.abs(lat.astype(np.float32) - ref).mean() < 0.1 * np.abs(ref).mean() + 1e-3

    dm = TalkingClipDataModule(out, batch_size=1, fields=("video", "audio_features", "latents"))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio_features"].shape == (1, tokens, 32) and batch["audio_features"].dtype == torch.float32
    assert batch["latents"].shape == (1, 16, fmt.latent_frames(FRAMES), SIZE // 8, SIZE // 8)
