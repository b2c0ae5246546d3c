"""WanVAETrainer: the loss goes down on a repeated batch; the export round-trips with latent statistics."""

from __future__ import annotations

import pytest
import torch

from fantasytalking.errors import InputError
from fantasytalking.training.vae import WanVAETrainer

# A small Wan VAE (stride 4x8x8 kept, 8 base channels): fast on CPU.
SMALL_VAE = {"base_dim": 8, "z_dim": 16, "dim_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_scales": [],
             "temperal_downsample": [False, True, True]}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models run fastest on one thread; 2 shared cores stall when OpenMP threads compete."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _video(batch: int = 2, frames: int = 5, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random clips (B, 3, N, H, W) in [-1, 1]: low-frequency patterns a VAE can learn quickly."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, frames, 4, 4, generator=gen) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(frames, size, size), mode="trilinear").clamp(-1, 1)


def test_vae_loss_decreases_on_a_repeated_batch() -> None:
    torch.manual_seed(0)
    module = WanVAETrainer(SMALL_VAE, lr=1e-3, sample_posterior=False)
    optimizer = module.configure_optimizers()
    batch = {"video": _video(frames=1)}  # single frames: ~0.2 s a step (clips of 5 frames: ~2 s)
    losses = []
    for step in range(12):
        gen = torch.Generator().manual_seed(step)
        out = module.compute_loss(module.select_frames(batch["video"], gen)[0], gen)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["loss"].detach()))
    with torch.no_grad():
        final = float(module.compute_loss(batch["video"], torch.Generator().manual_seed(0))["loss"])
    assert final < losses[0] * 0.96, (losses, final)  # measured: 0.361 -> ~0.33 in 10 steps


def test_select_frames_shapes() -> None:
    module = WanVAETrainer(SMALL_VAE, single_frame_prob=1.0, frames_per_clip=3)
    video = _video(batch=2, frames=5)
    mask = (torch.rand(2, 1, 5, 32, 32) > 0.5).float()
    frames, picked = module.select_frames(video, torch.Generator().manual_seed(0), mask)
    assert frames.shape == (6, 3, 1, 32, 32) and picked.shape == (6, 1, 1, 32, 32)
    # the mask frames are the video's frames: find each picked frame in its clip, then compare masks
    for i in range(6):
        clip = i // 3
        t = int(((video[clip].transpose(0, 1) - frames[i, :, 0][None]).abs().flatten(1).sum(1)).argmin())
        torch.testing.assert_close(picked[i, :, 0], mask[clip, :, t])
    with pytest.raises(InputError):
        module.compute_loss(video[:, :, :4], torch.Generator())


def test_export_round_trip_and_normalised_latents(tmp_path) -> None:
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    module = WanVAETrainer(SMALL_VAE)
    batches = [{"video": _video(seed=1)}, {"video": _video(seed=2)}]
    path = module.export_vae(tmp_path / "vae", batches=batches)
    loaded = AutoencoderKLWan.from_pretrained(str(path)).eval()
    for a, b in zip(module.vae.state_dict().values(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b)
    video = torch.cat([b["video"] for b in batches])
    with torch.no_grad():
        z = loaded.encode(video).latent_dist.mode()  # (B, z, F, h, w)
    mean = torch.tensor(loaded.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(loaded.config.latents_std).view(1, -1, 1, 1, 1)
    normalised = ((z - mean) / std).transpose(0, 1).reshape(16, -1)  # (z, B*F*h*w)
    assert normalised.mean(1).abs().max() < 1e-3
    assert (normalised.std(1) - 1).abs().max() < 1e-3


def test_unclamped_decode_matches_diffusers() -> None:
    from fantasytalking.training.vae import decode_unclamped

    torch.manual_seed(0)
    module = WanVAETrainer(SMALL_VAE)
    z = torch.randn(1, 16, 2, 4, 4) * 3
    with torch.no_grad():
        torch.testing.assert_close(decode_unclamped(module.vae, z).clamp(-1, 1), module.vae.decode(z).sample)


@pytest.mark.slow
def test_default_lr_learns_input_dependent_reconstructions() -> None:
    """At the default learning rate the demo VAE leaves the constant (mean-colour) output on VARIED images;
    at 1e-3 it collapses to it (docs/design.md). Smooth random images at 32 px, fresh each step."""
    from fantasytalking.training.presets import DEMO_VAE
    from fantasytalking.training.vae import decode_unclamped

    def images(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        coarse = torch.rand(16, 3, 1, 3, 3, generator=gen) * 2 - 1
        return torch.nn.functional.interpolate(coarse, size=(1, 32, 32), mode="trilinear").clamp(-1, 1)

    torch.manual_seed(0)
    module = WanVAETrainer(dict(DEMO_VAE), sample_posterior=False, mse_weight=1.0)  # default lr
    optimizer = module.configure_optimizers()
    held_out = images(999)
    constant = float((held_out - held_out.mean()).abs().mean())  # the best input-independent output
    for step in range(160):
        loss = module.compute_loss(images(step), torch.Generator().manual_seed(step))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        recon = decode_unclamped(module.vae, module.vae.encode(held_out).latent_dist.mode())
    assert float((recon - held_out).abs().mean()) < 0.9 * constant


@pytest.mark.slow
def test_command_line_trains_exports_resumes_and_refuses_a_mismatched_init(tmp_path) -> None:
    from diffusers import AutoencoderKLWan

    from fantasytalking.data.synthtalk import SynthConfig, espeak_available, write_synthtalk
    from fantasytalking.training.presets import DEMO_VAE
    from fantasytalking.training.vae import main

    if not espeak_available():
        pytest.skip("libespeak-ng1 is not installed (SynthTalk speech)")
    shards = tmp_path / "shards"
    write_synthtalk(SynthConfig(out_dir=shards, clips=4, size=32, num_frames=5, seed=0))
    common = ["--shards", str(shards), "--batch-size", "2", "--num-frames", "5", "--stats-batches", "1",
              "--accelerator", "cpu"]  # fmt: skip
    out = tmp_path / "vae"
    assert main([*common, "--out", str(out), "--steps", "2", "--checkpoint-every", "1"]) == 0
    assert AutoencoderKLWan.from_pretrained(str(out)).config.is_residual
    last = next((out / "train").rglob("last.ckpt"))
    again = tmp_path / "vae-again"
    assert main([*common, "--out", str(again), "--export-from", str(last)]) == 0
    for a, b in zip(AutoencoderKLWan.from_pretrained(str(out)).state_dict().values(),
                    AutoencoderKLWan.from_pretrained(str(again)).state_dict().values()):  # fmt: skip
        torch.testing.assert_close(a, b)
    assert main([*common, "--out", str(tmp_path / "more"), "--steps", "1", "--init-from", str(out)]) == 0
    # --decoder-only: the encoder and the latent statistics of --init-from, exactly; also through --export-from
    with pytest.raises(InputError, match="--init-from"):
        main([*common, "--out", str(tmp_path / "dec-bad"), "--steps", "1", "--decoder-only"])
    dec = tmp_path / "dec"
    assert main([*common, "--out", str(dec), "--steps", "2", "--decoder-only", "--init-from", str(out)]) == 0
    dec_again = tmp_path / "dec-again"
    assert main([*common, "--out", str(dec_again), "--export-from", str(next((dec / "train").rglob("last.ckpt")))]) == 0
    start = AutoencoderKLWan.from_pretrained(str(out))
    for folder in (dec, dec_again):
        tuned = AutoencoderKLWan.from_pretrained(str(folder))
        assert tuned.config.latents_mean == start.config.latents_mean
        assert tuned.config.latents_std == start.config.latents_std
        for key, value in start.state_dict().items():
            same = torch.equal(value, tuned.state_dict()[key])
            assert same if key.startswith(("encoder.", "quant_conv.")) else True, key
        assert any(not torch.equal(v, tuned.state_dict()[k]) for k, v in start.state_dict().items()
                   if k.startswith("decoder."))  # fmt: skip
    other = tmp_path / "wan21"
    AutoencoderKLWan(**{**DEMO_VAE, "is_residual": False}).save_pretrained(str(other))
    with pytest.raises(InputError, match="does not fit the demo VAE"):
        main([*common, "--out", str(tmp_path / "bad"), "--steps", "1", "--init-from", str(other)])


def _mouth_clip(batch: int = 2, frames: int = 5, size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips with a dark 'mouth' square at a known place per clip, and its mask."""
    video = torch.zeros(batch, 3, frames, size, size)
    mask = torch.zeros(batch, 1, frames, size, size)
    for b, (y, x) in enumerate([(30, 20), (10, 36)][:batch]):
        video[b, :, :, y - 2 : y + 2, x - 2 : x + 2] = -1.0
        mask[b, :, :, y - 3 : y + 3, x - 3 : x + 3] = 1.0
    return video, mask


def test_crops_lie_on_the_latent_grid_and_mouth_crops_hold_the_mouth() -> None:
    module = WanVAETrainer(SMALL_VAE, crop_size=16, mouth_crop_prob=1.0)
    assert module.spatial_stride == 8
    video, mask = _mouth_clip()
    for seed in range(6):
        crops, masks = module.crop(video, torch.Generator().manual_seed(seed), mask)
        assert crops.shape == (2, 3, 5, 16, 16) and masks.shape == (2, 1, 5, 16, 16)
        for b in range(2):
            assert float(masks[b].sum()) > 0.5 * float(mask[b].sum())  # the mouth (or most of it) is inside
            # the crop is a grid-aligned window of the clip: find it
            hits = [(t, x) for t in range(0, 33, 8) for x in range(0, 33, 8)
                    if torch.equal(video[b, :, :, t : t + 16, x : x + 16], crops[b])]  # fmt: skip
            assert hits, "crop offsets must be multiples of the VAE stride"
    uniform = WanVAETrainer(SMALL_VAE, crop_size=16)
    crops, none = uniform.crop(video, torch.Generator().manual_seed(0))
    assert crops.shape == (2, 3, 5, 16, 16) and none is None
    with pytest.raises(InputError, match="multiple"):
        WanVAETrainer(SMALL_VAE, crop_size=12)
    with pytest.raises(InputError, match="lip_mask"):
        module.crop(video, torch.Generator())


def test_mouth_weight_adds_the_lip_region_error() -> None:
    torch.manual_seed(0)
    video, mask = _mouth_clip()
    plain = WanVAETrainer(SMALL_VAE, sample_posterior=False, mse_weight=1.0)
    weighted = WanVAETrainer(SMALL_VAE, sample_posterior=False, mse_weight=1.0, mouth_weight=3.0)
    weighted.vae.load_state_dict(plain.vae.state_dict())
    with torch.no_grad():
        a = plain.compute_loss(video, torch.Generator().manual_seed(0))
        b = weighted.compute_loss(video, torch.Generator().manual_seed(0), mask)
        recon = plain.vae.decode(plain.vae.encode(video).latent_dist.mode()).sample  # clamped: same inside [-1, 1]
    from fantasytalking.training.vae import decode_unclamped

    with torch.no_grad():
        err = decode_unclamped(plain.vae, plain.vae.encode(video).latent_dist.mode()) - video
    inside = mask.expand_as(err).bool()
    expected = err[inside].abs().mean() + err[inside].square().mean()
    torch.testing.assert_close(b["loss"] - a["loss"], 3.0 * expected, rtol=1e-4, atol=1e-6)
    assert recon.shape == video.shape
    with pytest.raises(InputError, match="lip_mask"):
        weighted.compute_loss(video, torch.Generator())


def test_reconstruction_scores_see_whether_the_mouth_is_kept() -> None:
    """A VAE stand-in that returns its input keeps every mouth (r = 1); one that blurs the mouth keeps none."""
    from types import SimpleNamespace
    from unittest import mock

    from fantasytalking.training import vae as vae_module

    class Identity(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def encode(self, x: torch.Tensor) -> SimpleNamespace:
            return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: x))

    from fantasytalking.data.synthtalk import SynthConfig, espeak_available, make_clip

    if not espeak_available():
        pytest.skip("libespeak-ng1 is not installed (SynthTalk speech)")
    clip = make_clip(SynthConfig(size=64, num_frames=17, seed=3), 0)
    frames = torch.from_numpy(clip.frames).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None]  # (1, 3, N, H, W)
    with mock.patch.object(vae_module, "decode_unclamped", lambda vae, z: z):
        kept = vae_module.reconstruction_scores(Identity(), [frames])
        blurred = vae_module.reconstruction_scores(Identity(), [torch.nn.functional.avg_pool3d(
            frames, (1, 9, 9), stride=1, padding=(0, 4, 4))])  # fmt: skip
    assert kept["mouth_r"] > 0.99 and kept["psnr"] > 60 and abs(kept["mouth_ratio"] - 1) < 1e-6
    assert blurred["mouth_r"] < 0.5 and blurred["mouth_ratio"] < 0.5


def test_per_frame_vae_encodes_every_frame_on_its_own() -> None:
    from fantasytalking.training.vae import per_frame_vae

    torch.manual_seed(0)
    video_vae = WanVAETrainer({**SMALL_VAE, "is_residual": True}).vae.eval()
    frame_vae = per_frame_vae(video_vae)
    assert frame_vae.config.temperal_downsample == [False, False, False]
    assert not any(".time_conv." in k for k in frame_vae.state_dict())
    video = _video(batch=1, frames=5)
    with torch.no_grad():
        whole = frame_vae.encode(video).latent_dist.mode()  # (1, z, 5, h, w): one latent frame per frame
        alone = torch.cat([frame_vae.encode(video[:, :, i : i + 1]).latent_dist.mode() for i in range(5)], dim=2)
        decoded = frame_vae.decode(whole).sample
        decoded_alone = torch.cat([frame_vae.decode(whole[:, :, i : i + 1]).sample for i in range(5)], dim=2)
    assert whole.shape[2] == 5
    torch.testing.assert_close(whole, alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(decoded, decoded_alone, rtol=1e-4, atol=1e-5)
    # every weight but the past taps is the source's
    src = video_vae.state_dict()
    for key, value in frame_vae.state_dict().items():
        if value.ndim == 5 and value.shape[2] == 3:
            torch.testing.assert_close(value[:, :, -1], src[key][:, :, -1])
            assert not value[:, :, :-1].any()
        else:
            torch.testing.assert_close(value, src[key])


def test_decoder_only_leaves_the_encoder_and_the_latent_statistics_exactly_as_they_were(tmp_path) -> None:
    """decoder_only: the encoder / quant_conv never change (bit for bit, so every latent the stages were trained
    on is unchanged), the decoder learns, and the export keeps the start's latents_mean / latents_std."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    start = WanVAETrainer(SMALL_VAE, sample_posterior=False)
    start_dir = start.export_vae(tmp_path / "start", batches=[{"video": _video(frames=1, seed=3)}])
    config = {k: v for k, v in AutoencoderKLWan.load_config(str(start_dir)).items() if not k.startswith("_")}
    module = WanVAETrainer(config, lr=1e-3, sample_posterior=False, decoder_only=True)
    module.vae.load_state_dict(AutoencoderKLWan.from_pretrained(str(start_dir)).state_dict(), strict=True)
    frozen = {k: v.clone() for k, v in module.vae.state_dict().items() if k.startswith(("encoder.", "quant_conv."))}
    decoder = {k: v.clone() for k, v in module.vae.state_dict().items() if k.startswith(("decoder.", "post_quant"))}
    optimizer = module.configure_optimizers()
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for n, p in module.vae.named_parameters() if n.startswith(("decoder.", "post_quant"))}
    module.train()
    assert not module.vae.encoder.training and module.vae.decoder.training
    batch = _video(frames=1)
    losses = []
    for step in range(10):
        out = module.compute_loss(batch, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < losses[0] * 0.97, losses
    # no KL in the loss: with a frozen encoder it is a constant (logged only)
    torch.testing.assert_close(out["loss"].detach(), out["l1"] + module.mse_weight * out["mse"], atol=0, rtol=0)
    state = module.vae.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    assert any(not torch.equal(state[k], v) for k, v in decoder.items())
    path = module.export_vae(tmp_path / "tuned", batches=[{"video": _video(frames=1, seed=4)}])
    tuned = AutoencoderKLWan.load_config(str(path))
    before = AutoencoderKLWan.load_config(str(start_dir))
    assert tuned["latents_mean"] == before["latents_mean"] and tuned["latents_std"] == before["latents_std"]
    bare = WanVAETrainer({**config, "latents_mean": None, "latents_std": None}, decoder_only=True)
    with pytest.raises(InputError, match="--init-from"):
        bare.export_vae(tmp_path / "bare", batches=[batch])


def test_vae_command_runs_without_a_second_copy_of_its_module():
    """``python -m fantasytalking.training.vae`` (the documented command) must not find its module already imported
    by the package: runpy then warns and runs a second copy of it (two ``WanVAETrainer`` classes). The package still
    gives ``fantasytalking.training.WanVAETrainer`` on first use."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "fantasytalking.training.vae", "--help"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "--decoder-only" in done.stdout, done.stderr[-2000:]
    import fantasytalking.training as training
    from fantasytalking.training.vae import WanVAETrainer as direct

    assert training.WanVAETrainer is direct and "WanVAETrainer" in training.__all__
