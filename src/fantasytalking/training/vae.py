"""Training a small Wan VAE (diffusers ``AutoencoderKLWan``) on talking clips, for the ``demo`` preset.

:class:`WanVAETrainer` reads batches in the datamodule format (``batch["video"]``: ``(B, 3, N, H, W)`` in
``[-1, 1]``), so :class:`~fantasytalking.data.TalkingClipDataModule` (SynthTalk shards) and
:class:`~fantasytalking.training.SyntheticTalkingDataModule` both feed it. Loss::

    L = |x - D(z)|_1 + mse_weight * |x - D(z)|^2 + kl_weight * KL(q(z|x) || N(0, I))

with every term a per-element mean (so ``kl_weight`` is per latent element, not per pixel as in LDM's 1e-6
over sums). With ``mouth_weight > 0`` the batch's ``lip_mask`` ``(B, 1, N, H, W)`` adds the same L1 + MSE terms
averaged over the lip region only, ``mouth_weight * (|x - D(z)|_1 + mse_weight * |x - D(z)|^2)|_mouth``: the mouth
is a few percent of a SynthTalk frame, and without the term a small VAE draws the face long before the mouth. ``single_frame_prob`` trains a step on single frames (``(B*k, 3, 1, H, W)``: the causal VAE
encodes a first frame alone), several times cheaper than clips; the temporal layers learn on the clip steps.

:meth:`WanVAETrainer.export_vae` writes a ``save_pretrained`` folder whose ``latents_mean`` / ``latents_std``
are the per-channel statistics of the trained encoder's latents over a few batches, so the pipeline's
normalisation ``(z - mean) / std`` gives latents of about zero mean and unit variance per channel.

``decoder_only=True`` (``--decoder-only --init-from VAE``) fine-tunes ``post_quant_conv`` and the decoder of an
exported VAE and nothing else: the encoder and ``quant_conv`` are frozen and the export keeps the start's
``latents_mean`` / ``latents_std``, so every normalised latent is bit for bit what it was and a transformer trained
on that VAE's latents decodes through the new decoder without retraining (the demo's decoder was sharpened this
way after both stages had trained; docs/demo.md).

Example::

    trainer = lightning.Trainer(max_steps=2000, accelerator="cpu")
    module = WanVAETrainer(lr=2e-4, single_frame_prob=0.5)
    trainer.fit(module, datamodule=dm)
    module.export_vae("runs/demo_vae", batches=dm.train_dataloader())
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from fantasytalking.errors import InputError

__all__ = ["ReconstructionMonitor", "WanVAETrainer", "decode_unclamped", "latent_statistics", "per_frame_vae",
           "reconstruction_scores", "score_reconstructions"]


def _default_vae_config() -> dict[str, Any]:
    from fantasytalking.training.presets import DEMO_VAE

    return copy.deepcopy(DEMO_VAE)


def decode_unclamped(vae: Any, z: torch.Tensor) -> torch.Tensor:
    """``AutoencoderKLWan`` decoding WITHOUT the final ``clamp(-1, 1)`` of diffusers' ``_decode``.

    Training needs it: the clamp has zero gradient wherever the output leaves ``[-1, 1]``, and a random
    decoder's outputs mostly do, so a VAE trained through ``vae.decode`` stalls at the mean colour. The
    steps are diffusers' own (``post_quant_conv``, then the causal decoder one latent frame at a time with
    its feature cache, then ``unpatchify``); ``decode_unclamped(vae, z).clamp(-1, 1) == vae.decode(z).sample``
    (tested). ``z``: ``(B, z_dim, F, h, w)`` -> ``(B, 3, N, H, W)``.
    """
    vae.clear_cache()
    x = vae.post_quant_conv(z)
    frames = []
    for i in range(x.shape[2]):
        vae._conv_idx = [0]
        frames.append(vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                                  first_chunk=i == 0))  # fmt: skip
    out = torch.cat(frames, dim=2)
    if vae.config.patch_size is not None:
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        out = unpatchify(out, patch_size=vae.config.patch_size)
    vae.clear_cache()
    return out


@torch.no_grad()
def latent_statistics(vae: Any, videos: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std ``(z,)`` each of the posterior modes of ``videos`` (each ``(B, 3, N, H, W)``).

    Pooled over batch, latent frames and positions, accumulated in float64.
    """
    device = next(vae.parameters()).device
    total = sq = None
    count = 0
    for video in videos:
        z = vae.encode(video.to(device, vae.dtype)).latent_dist.mode().double()  # (B, z, F, h, w)
        flat = z.transpose(0, 1).reshape(z.shape[1], -1)  # (z, B*F*h*w)
        total = flat.sum(1) if total is None else total + flat.sum(1)
        sq = flat.square().sum(1) if sq is None else sq + flat.square().sum(1)
        count += flat.shape[1]
    if total is None or sq is None or count < 2:
        raise InputError("no batches to compute latent statistics from; give at least one video batch.")
    mean = total / count
    var = (sq / count - mean.square()).clamp(min=1e-12) * count / (count - 1)
    return mean.float().cpu(), var.sqrt().float().cpu()


@torch.no_grad()
def per_frame_vae(vae: Any) -> Any:
    """An ``AutoencoderKLWan`` without temporal compression, initialised from ``vae`` (one that compresses time).

    Every weight of ``vae`` but its temporal resampling convolutions (``time_conv``, which a VAE without temporal
    compression does not have) is copied; then the past taps of every causal convolution are set to zero, so each
    frame is encoded and decoded on its own, as ``vae`` encodes a first frame. (The parameter-free shortcuts of
    Wan2.2's residual blocks average over time in ``vae``, so the copy is close to, not equal to, ``vae``'s
    first-frame path; a few hundred single-frame steps close the gap.) Train it on single frames
    (``single_frame_prob=1``) to keep it per-frame: past taps then see only causal zero padding.
    """
    from diffusers import AutoencoderKLWan
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    config.update(temperal_downsample=[False] * len(config["temperal_downsample"]), scale_factor_temporal=1)
    out = AutoencoderKLWan(**config)
    source = vae.state_dict()
    target = out.state_dict()
    left_out = sorted(set(source) - set(target))
    if any(".time_conv." not in k for k in left_out) or set(target) - set(source):
        raise InputError("the VAE to convert is not a Wan VAE of the same structure up to temporal compression.")
    for key, value in target.items():
        if source[key].shape != value.shape:
            raise InputError(f"cannot convert: {key} has shape {tuple(source[key].shape)}, expected {tuple(value.shape)}.")
        value.copy_(source[key])
    for module in out.modules():
        if isinstance(module, WanCausalConv3d) and module.kernel_size[0] > 1:
            module.weight[:, :, :-1] = 0  # (C_out, C_in, k_t, k_h, k_w): only the current frame's tap stays
    return out.to(dtype=next(vae.parameters()).dtype).eval()


@torch.no_grad()
def round_trip(vae: Any, video: torch.Tensor) -> torch.Tensor:
    """``video`` ``(B, 3, N, H, W)`` in ``[-1, 1]`` encoded (posterior mode) and decoded by ``vae`` (in its own
    dtype), in ``[-1, 1]`` (float32, on the VAE's device): what ``vae.decode(...).sample`` gives, as a generated
    video's frames are."""
    weight = next(vae.parameters())
    x = video.to(weight.device, weight.dtype)
    return decode_unclamped(vae, vae.encode(x).latent_dist.mode()).float().clamp(-1, 1)  # (B, 3, N, H, W)


@torch.no_grad()
def reconstruction_scores(vae: Any, videos: Iterable[torch.Tensor]) -> dict[str, float]:
    """How well ``vae`` keeps talking-face clips, from the pixels: PSNR and the mouth.

    ``videos``: clips ``(B, 3, N, H, W)`` in ``[-1, 1]``. Each is encoded (posterior mode) and decoded; the
    scores pool every clip:

    * ``psnr``: of the reconstructions against the clips (dB, signals in ``[-1, 1]``);
    * ``mouth_r``: Pearson correlation of the mouth opening measured from the reconstructions' pixels with the
      opening measured from the clips' own pixels (:func:`fantasytalking.metrics.synthtalk.mouth_opening`), over
      all frames: 1 when the VAE draws every mouth as it was, about 0 when it draws none (a blurred mouth
      measures as closed);
    * ``mouth_ratio``: mean measured opening of the reconstructions over that of the clips.
    """
    device = next(vae.parameters()).device
    pairs = ((x, round_trip(vae, x)) for x in (video.to(device, torch.float32) for video in videos))
    return score_reconstructions(pairs)


@torch.no_grad()
def score_reconstructions(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """:func:`reconstruction_scores` of given ``(clips, reconstructions)`` pairs, each ``(B, 3, N, H, W)`` in
    ``[-1, 1]`` (for a caller that needs the reconstructions too, so the VAE runs once)."""
    from fantasytalking.metrics.synthtalk import as_frames, mouth_opening

    sq = count = 0.0
    measured: list[np.ndarray] = []
    reference: list[np.ndarray] = []
    for x, recon in pairs:
        recon = recon.to(x.device, torch.float32)
        sq += float((recon - x).square().sum())
        count += x.numel()
        for original, rebuilt in zip(x.cpu(), recon.cpu()):
            measured.append(mouth_opening(as_frames(rebuilt)))
            reference.append(mouth_opening(as_frames(original)))
    if not count:
        raise InputError("no clips to score the VAE on; give at least one video batch.")
    got, want = np.concatenate(measured), np.concatenate(reference)
    r = float(np.corrcoef(got, want)[0, 1]) if got.std() > 0 and want.std() > 0 else 0.0
    return {"psnr": float(10 * np.log10(4.0 / max(sq / count, 1e-10))), "mouth_r": r,
            "mouth_ratio": float(got.mean() / max(want.mean(), 1e-8))}  # fmt: skip


class ReconstructionMonitor(pl.Callback):
    """Scores the VAE on fixed held-out clips every ``every_n_steps`` training steps (:func:`reconstruction_scores`):
    logs ``heldout/psnr``, ``heldout/mouth_r``, ``heldout/mouth_ratio`` and appends them to ``csv_path``.

    ``videos``: the held-out clips, a list of ``(B, 3, N, H, W)`` tensors in ``[-1, 1]``.
    """

    def __init__(self, videos: list[torch.Tensor], every_n_steps: int = 100, csv_path: str | Path | None = None):
        if every_n_steps < 1 or not videos:
            raise InputError("ReconstructionMonitor needs held-out clips and every_n_steps >= 1.")
        self.videos, self.every_n_steps = videos, every_n_steps
        self.csv_path = None if csv_path is None else Path(csv_path)
        self.history: list[dict[str, float]] = []

    def score(self, pl_module: WanVAETrainer) -> dict[str, float]:
        was_training = pl_module.vae.training
        pl_module.vae.eval()
        try:
            return reconstruction_scores(pl_module.vae, self.videos)
        finally:
            pl_module.vae.train(was_training)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step % self.every_n_steps or not trainer.is_global_zero:
            return
        scores = self.score(pl_module)
        row = {"step": float(step), **scores}
        self.history.append(row)
        for key, value in scores.items():
            pl_module.log(f"heldout/{key}", value, rank_zero_only=True)
        if self.csv_path is not None:
            new = not self.csv_path.exists()
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.csv_path, "a") as fh:
                if new:
                    fh.write(",".join(row) + "\n")
                fh.write(",".join(f"{v:.6g}" for v in row.values()) + "\n")
        print("heldout " + " ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)


class WanVAETrainer(pl.LightningModule):
    """Trains an ``AutoencoderKLWan`` (encoder + decoder) as a KL autoencoder on video clips.

    Args:
        vae_config: ``AutoencoderKLWan`` constructor arguments (default: the demo preset's ``DEMO_VAE``).
        lr: AdamW's learning rate.
        weight_decay: AdamW's weight decay.
        betas: AdamW's betas.
        mse_weight: weight of the squared error added to the L1 reconstruction loss.
        kl_weight: weight of the per-element KL to ``N(0, I)``.
        mouth_weight: weight of the reconstruction terms over the lip mask (0: none; the batches then need no
            ``lip_mask``).
        single_frame_prob: probability that a step trains on ``frames_per_clip`` single frames per clip
            instead of the whole clips (cheaper; 0 = clips only, 1 = images only).
        frames_per_clip: frames drawn per clip for a single-frame step.
        crop_size: train on square crops of this side (a multiple of the VAE's spatial stride), the same window
            in every frame of a clip; None: whole frames. The VAE is convolutional, so crops teach it the
            frames' content at a fraction of the cost (scoring is on whole frames).
        mouth_crop_prob: probability that a clip's crop is centred on its lip mask (jittered by up to a quarter
            of the crop), else placed uniformly; needs ``lip_mask`` in the batch when above 0.
        sample_posterior: decode a posterior sample (True, the KL-VAE objective) or its mode.
        seed: seed of the frame draws and posterior samples (a function of seed and step only).
        decoder_only: train ``post_quant_conv`` and the decoder only; the encoder and ``quant_conv`` are frozen
            (no gradient, never in the optimizer), so every latent stays exactly what it was and a transformer
            trained on this VAE's latents needs no retraining; the KL term is then a constant and is left out of
            the loss (still logged). :meth:`export_vae` then keeps the config's ``latents_mean`` /
            ``latents_std`` (the normalisation the transformer was trained with) instead of measuring new ones.
    """

    def __init__(
        self,
        vae_config: Mapping[str, Any] | None = None,
        *,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.99),
        mse_weight: float = 0.0,
        kl_weight: float = 1e-4,
        mouth_weight: float = 0.0,
        single_frame_prob: float = 0.0,
        frames_per_clip: int = 2,
        crop_size: int | None = None,
        mouth_crop_prob: float = 0.0,
        sample_posterior: bool = True,
        seed: int = 0,
        decoder_only: bool = False,
    ) -> None:
        super().__init__()
        from diffusers import AutoencoderKLWan

        if not 0.0 <= single_frame_prob <= 1.0 or frames_per_clip < 1 or mouth_weight < 0:
            raise InputError("single_frame_prob must be in [0, 1], frames_per_clip >= 1 and mouth_weight >= 0.")
        config = copy.deepcopy(dict(vae_config)) if vae_config is not None else _default_vae_config()
        # decoder_only is saved too: --export-from of such a run must keep the latent statistics, not re-measure them
        self.save_hyperparameters({"vae_config": config, "decoder_only": bool(decoder_only)})
        self.lr, self.weight_decay, self.betas = lr, weight_decay, tuple(betas)
        self.mse_weight, self.kl_weight, self.mouth_weight = mse_weight, kl_weight, mouth_weight
        self.single_frame_prob, self.frames_per_clip = single_frame_prob, frames_per_clip
        self.sample_posterior, self.seed = sample_posterior, int(seed)
        self.vae = AutoencoderKLWan(**config)
        stride = self.spatial_stride
        if crop_size is not None and (crop_size < stride or crop_size % stride):
            raise InputError(f"crop_size must be a multiple of the VAE's spatial stride {stride}, got {crop_size}.")
        if not 0.0 <= mouth_crop_prob <= 1.0:
            raise InputError(f"mouth_crop_prob must be in [0, 1], got {mouth_crop_prob}.")
        self.crop_size, self.mouth_crop_prob = crop_size, mouth_crop_prob
        self.decoder_only = bool(decoder_only)
        if self.decoder_only:  # no gradient reaches them, so encoding builds no graph either
            self.vae.encoder.requires_grad_(False)
            self.vae.quant_conv.requires_grad_(False)

    def train(self, mode: bool = True) -> WanVAETrainer:
        super().train(mode)
        if self.decoder_only:  # a frozen encoder encodes as at export time, whatever Lightning sets
            self.vae.encoder.eval()
            self.vae.quant_conv.eval()
        return self

    @property
    def spatial_stride(self) -> int:
        """Pixels per latent cell along a side (8 for Wan's VAE: one 2x downsampling per ``temperal_downsample``
        entry, times the patch size)."""
        cfg = self.vae.config
        return 2 ** len(cfg.temperal_downsample) * (cfg.patch_size or 1)

    # ------------------------------------------------------------------ data

    def _generator(self, batch_idx: int) -> torch.Generator:
        step = self.global_step if self._trainer is not None else batch_idx
        return torch.Generator().manual_seed(self.seed * 1_000_003 + int(step))

    def crop(
        self, video: torch.Tensor, generator: torch.Generator, lip_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Square crops ``(B, C, N, crop, crop)`` of the clips (and of ``lip_mask``), at offsets on the latent grid;
        each clip's crop is centred on its lips with probability ``mouth_crop_prob`` (see the class docstring)."""
        size = self.crop_size
        batch, _, _, height, width = video.shape
        if size is None or (size >= height and size >= width):
            return video, lip_mask
        if self.mouth_crop_prob > 0 and lip_mask is None:
            raise InputError("mouth_crop_prob > 0 needs the batch's lip_mask; load the 'lip_mask' field from the shards.")
        stride, size_h, size_w = self.spatial_stride, min(size, height), min(size, width)
        crops, masks = [], []
        for b in range(batch):
            draws = torch.rand(3, generator=generator).tolist()  # (mouth?, x, y): the same count every clip
            centre = None
            if lip_mask is not None and draws[0] < self.mouth_crop_prob and bool(lip_mask[b].any()):
                ys, xs = torch.nonzero(lip_mask[b].amax(dim=(0, 1)), as_tuple=True)
                jitter = (torch.tensor(draws[1:]) - 0.5) * (size / 2)  # up to a quarter crop either way
                centre = (float(ys.float().mean() + jitter[1]), float(xs.float().mean() + jitter[0]))
            if centre is None:
                top = int(draws[2] * ((height - size_h) // stride + 1)) * stride
                left = int(draws[1] * ((width - size_w) // stride + 1)) * stride
            else:
                top = min(max(round((centre[0] - size_h / 2) / stride) * stride, 0), height - size_h)
                left = min(max(round((centre[1] - size_w / 2) / stride) * stride, 0), width - size_w)
            crops.append(video[b, :, :, top : top + size_h, left : left + size_w])
            if lip_mask is not None:
                masks.append(lip_mask[b, :, :, top : top + size_h, left : left + size_w])
        return torch.stack(crops), (torch.stack(masks) if lip_mask is not None else None)

    def select_frames(
        self, video: torch.Tensor, generator: torch.Generator, lip_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The step's input: the clips ``(B, 3, N, H, W)``, or single frames ``(B*k, 3, 1, H, W)``; and the same
        frames of ``lip_mask`` ``(B, 1, N, H, W)`` when one is given (else None)."""
        if self.single_frame_prob <= 0 or float(torch.rand((), generator=generator)) >= self.single_frame_prob:
            return video, lip_mask
        batch, _, frames, height, width = video.shape
        k = min(self.frames_per_clip, frames)
        idx = torch.stack([torch.randperm(frames, generator=generator)[:k] for _ in range(batch)])  # (B, k)

        def pick(x: torch.Tensor) -> torch.Tensor:
            picked = x[torch.arange(batch)[:, None], :, idx.to(x.device)]  # (B, k, C, H, W)
            return picked.reshape(batch * k, x.shape[1], 1, height, width)

        return pick(video), None if lip_mask is None else pick(lip_mask)

    # ------------------------------------------------------------------ loss

    def compute_loss(
        self, video: torch.Tensor, generator: torch.Generator, lip_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Loss terms of a video batch ``(B, 3, N, H, W)`` in ``[-1, 1]``; ``loss`` is the total.

        ``lip_mask``: ``(B, 1, N, H, W)`` in ``{0, 1}``, needed when ``mouth_weight > 0``.
        """
        stride = 2 ** sum(self.vae.config.temperal_downsample)  # video frames per latent frame (4 for Wan2.1)
        if video.ndim != 5 or video.shape[1] != 3 or (video.shape[2] - 1) % stride:
            raise InputError(f"expected videos (B, 3, {stride}k+1, H, W), got {tuple(video.shape)}.")
        if self.mouth_weight > 0 and (lip_mask is None or lip_mask.shape[2:] != video.shape[2:]):
            raise InputError("mouth_weight > 0 needs the batch's lip_mask (B, 1, N, H, W) of the video's frames; "
                             "load the 'lip_mask' field from the shards.")  # fmt: skip
        x = video.to(self.device, torch.float32)
        posterior = self.vae.encode(x).latent_dist  # mean / logvar (B, z, F, h, w)
        if self.sample_posterior:
            noise = torch.randn(posterior.mean.shape, generator=generator).to(x.device)
            z = posterior.mean + posterior.std * noise
        else:
            z = posterior.mean
        recon = decode_unclamped(self.vae, z)  # (B, 3, N, H, W); vae.decode's clamp would stop the gradient
        err = recon - x
        l1 = err.abs().mean()
        mse = err.square().mean()
        kl = 0.5 * (posterior.mean.square() + posterior.var - 1.0 - posterior.logvar).mean()
        loss = l1 + self.mse_weight * mse
        if not self.decoder_only:  # a frozen encoder's KL is a constant: no gradient to give
            loss = loss + self.kl_weight * kl
        out = {"l1": l1.detach(), "mse": mse.detach(), "kl": kl.detach(),
               "psnr": (10 * torch.log10(4.0 / mse.detach().clamp(min=1e-10)))}  # fmt: skip
        if self.mouth_weight > 0:
            mask = lip_mask.to(x.device, torch.float32)  # type: ignore[union-attr]  # (B, 1, N, H, W)
            area = (mask.sum() * err.shape[1]).clamp(min=1.0)  # lip pixels x channels
            mouth_l1 = (err.abs() * mask).sum() / area
            mouth_mse = (err.square() * mask).sum() / area
            loss = loss + self.mouth_weight * (mouth_l1 + self.mse_weight * mouth_mse)
            out["mouth_l1"] = mouth_l1.detach()
            out["mouth_psnr"] = 10 * torch.log10(4.0 / mouth_mse.detach().clamp(min=1e-10))
        return {"loss": loss, **out}

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        generator = self._generator(batch_idx)
        wants_mask = self.mouth_weight > 0 or (self.crop_size is not None and self.mouth_crop_prob > 0)
        mask = batch.get("lip_mask") if wants_mask else None
        video, mask = self.crop(batch["video"], generator, mask)
        video, mask = self.select_frames(video, generator, mask)
        mask = mask if self.mouth_weight > 0 else None
        out = self.compute_loss(video, generator, mask)
        size = video.shape[0]
        for key, value in out.items():
            self.log(f"train/{key}", value, prog_bar=key == "loss", batch_size=size)
        self.log("train/frames", float(video.shape[2]), batch_size=size)
        return out["loss"]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed + batch_idx)
        out = self.compute_loss(batch["video"], generator, batch.get("lip_mask") if self.mouth_weight > 0 else None)
        for key, value in out.items():
            self.log(f"val/{key}", value, batch_size=batch["video"].shape[0], sync_dist=True)
        return out["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.vae.parameters() if p.requires_grad]  # decoder_only: post_quant_conv + decoder
        return torch.optim.AdamW(params, lr=self.lr, betas=self.betas,  # type: ignore[arg-type]
                                 weight_decay=self.weight_decay)  # fmt: skip

    # ------------------------------------------------------------------ export

    def latent_statistics(
        self, batches: Iterable[Mapping[str, Any] | torch.Tensor], num_batches: int = 4
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean / std ``(z,)`` of the trained encoder's latents over the first ``num_batches``."""
        videos = (b["video"] if isinstance(b, Mapping) else b for b in itertools.islice(batches, num_batches))
        was_training = self.vae.training
        self.vae.eval()
        try:
            return latent_statistics(self.vae, videos)
        finally:
            self.vae.train(was_training)

    def export_vae(
        self,
        path: str | Path,
        batches: Iterable[Mapping[str, Any] | torch.Tensor] | None = None,
        *,
        num_batches: int = 4,
    ) -> Path:
        """Write ``save_pretrained`` of the VAE with ``latents_mean`` / ``latents_std`` from ``batches``.

        ``batches``: batches (or video tensors) to measure the latents on; default: the attached trainer's
        training dataloader. With ``decoder_only`` nothing is measured: the encoder is the one the config's
        statistics were measured on, and the transformer was trained with exactly those, so they are kept
        (``batches`` is ignored). Returns ``path``.
        """
        export = copy.deepcopy(self.vae).float().cpu().eval()
        if self.decoder_only:
            cfg = self.vae.config
            if cfg.latents_mean is None or len(cfg.latents_mean) != cfg.z_dim or len(cfg.latents_std) != cfg.z_dim:
                raise InputError("decoder_only keeps the VAE's latents_mean / latents_std, but its config has none of "
                                 f"size z_dim={cfg.z_dim}; start it from an exported VAE (--init-from).")  # fmt: skip
        else:
            export.register_to_config(**self._measured_statistics(batches, num_batches))
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        export.save_pretrained(str(out))
        return out

    def _measured_statistics(
        self, batches: Iterable[Mapping[str, Any] | torch.Tensor] | None, num_batches: int
    ) -> dict[str, list[float]]:
        """``latents_mean`` / ``latents_std`` of the trained encoder over ``batches`` (default: the trainer's
        training dataloader)."""
        if batches is None:
            trainer = self._trainer
            if trainer is None:
                raise InputError("export_vae needs batches (or a trainer with a datamodule) for the latent statistics.")
            datamodule = getattr(trainer, "datamodule", None)
            batches = datamodule.train_dataloader() if datamodule is not None else trainer.train_dataloader
            if batches is None:
                raise InputError("the trainer has no training dataloader; pass batches to export_vae.")
        mean, std = self.latent_statistics(batches, num_batches)
        return {"latents_mean": [float(v) for v in mean], "latents_std": [float(v) for v in std]}


# ---------------------------------------------------------------------------------------------- command line


def _read_vae_config(folder: str | Path) -> dict[str, Any]:
    """The ``config.json`` of an exported VAE folder, or a one-line error saying what is wrong."""
    path = Path(folder) / "config.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the VAE config {path} ({type(err).__name__}); give a folder written by "
                         "save_pretrained (config.json + diffusion_pytorch_model.safetensors).") from None  # fmt: skip


def heldout_videos(shards: str | Path, num_frames: int, clips: int) -> list[torch.Tensor]:
    """The first ``num_frames`` of the first ``clips`` clips of ``shards``, in shard order: ``(1, 3, N, H, W)`` each."""
    from fantasytalking.data import TalkingClipDataModule

    datamodule = TalkingClipDataModule(str(shards), batch_size=1, shuffle_buffer=1, num_frames=num_frames,
                                       fields=("video",), random_window=False, drop_last=False)  # fmt: skip
    datamodule.setup("fit")
    videos = [b["video"] for b in itertools.islice(datamodule.train_dataloader(), clips)]
    if not videos:
        raise InputError(f"no clips of at least {num_frames} frames in {shards}; give held-out shards for --heldout.")
    return videos


def main(argv: list[str] | None = None) -> int:
    """``python -m fantasytalking.training.vae --shards DIR --out DIR``: train the demo VAE on clip shards and
    export it (``save_pretrained`` + latent statistics) for ``backbone.vae`` of the ``demo`` preset."""
    import argparse

    from fantasytalking.data import TalkingClipDataModule

    parser = argparse.ArgumentParser(prog="python -m fantasytalking.training.vae", description=main.__doc__)
    parser.add_argument("--shards", required=True, help="clip shards (a folder, glob or .tar)")
    parser.add_argument("--out", required=True, help="export folder (AutoencoderKLWan.save_pretrained)")
    parser.add_argument("--steps", type=int, default=500, help="~25 min on 2 CPU cores at 96 px")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-frames", type=int, default=17, help="frames per clip (4k+1)")
    parser.add_argument("--single-frame-prob", type=float, default=0.75, help="share of single-frame steps")
    parser.add_argument("--frames-per-clip", type=int, default=4, help="frames per clip in a single-frame step")
    parser.add_argument("--lr", type=float, default=2e-4, help="3e-4 and above collapse to a constant output")
    parser.add_argument("--kl-weight", type=float, default=1e-4)
    parser.add_argument("--mse-weight", type=float, default=1.0, help="weight of the squared error beside L1")
    parser.add_argument("--mouth-weight", type=float, default=0.0,
                        help="weight of the reconstruction loss over the shards' lip masks (0: none)")  # fmt: skip
    parser.add_argument("--crop-size", type=int, default=None,
                        help="train on square crops of this side (multiple of 8; default: whole frames)")  # fmt: skip
    parser.add_argument("--mouth-crop-prob", type=float, default=0.0,
                        help="share of crops centred on the lips (needs the shards' lip masks)")  # fmt: skip
    parser.add_argument("--heldout", default=None,
                        help="held-out clip shards: PSNR and the mouth kept (mouth_r) are scored on them")  # fmt: skip
    parser.add_argument("--eval-every", type=int, default=100, help="score on --heldout every N steps")
    parser.add_argument("--eval-clips", type=int, default=8, help="held-out clips scored (their first --num-frames)")
    parser.add_argument("--posterior", choices=("sample", "mode"), default="mode",
                        help="decode a posterior sample (KL-VAE) or its mode (faster to learn from scratch)")
    parser.add_argument("--stats-batches", type=int, default=8, help="batches for the latent statistics")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--root", default=None, help="Lightning log / checkpoint folder (default: OUT/train)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="keep a checkpoint every N steps")
    parser.add_argument("--init-from", default=None,
                        help="start from the weights of an exported VAE folder (e.g. a partly trained one); "
                        "its structure must match the demo preset's")  # fmt: skip
    parser.add_argument("--vae-config", type=json.loads, default=None,
                        help="JSON of AutoencoderKLWan settings over the demo preset's (e.g. "
                        "'{\"temperal_downsample\": [false, true, true], \"scale_factor_temporal\": 4}')")  # fmt: skip
    parser.add_argument("--init-per-frame", default=None,
                        help="start from an exported VAE that compresses time (e.g. the 4x8x8 one of an earlier run), "
                        "converted by per_frame_vae; the demo VAE encodes each frame on its own")  # fmt: skip
    parser.add_argument("--decoder-only", action="store_true",
                        help="fine-tune post_quant_conv + decoder of --init-from only: the encoder, the latents and "
                        "their latents_mean / latents_std stay exactly as they are, so the stages trained on them "
                        "keep working")  # fmt: skip
    parser.add_argument("--export-from", default=None,
                        help="no training: export this checkpoint (e.g. an interrupted run's last.ckpt) to --out")  # fmt: skip
    args = parser.parse_args(argv)

    pl.seed_everything(args.seed)
    wants_mask = args.mouth_weight > 0 or (args.crop_size is not None and args.mouth_crop_prob > 0)
    fields = ("video", "lip_mask") if wants_mask else ("video",)
    datamodule = TalkingClipDataModule(args.shards, batch_size=args.batch_size, num_frames=args.num_frames,
                                       fields=fields, seed=args.seed)  # fmt: skip
    if args.export_from is not None:
        module = WanVAETrainer.load_from_checkpoint(args.export_from, map_location="cpu")
        out = module.export_vae(args.out, batches=datamodule.train_dataloader(), num_batches=args.stats_batches)
        print(f"VAE of {args.export_from} written to {out}")
        return 0
    if args.decoder_only and args.init_from is None:
        raise InputError("--decoder-only fine-tunes the decoder of an exported VAE; give it with --init-from.")
    vae_config = {**_default_vae_config(), **(args.vae_config or {})}
    if args.decoder_only:  # the start's own config: its latents_mean / latents_std are kept
        vae_config = {k: v for k, v in _read_vae_config(args.init_from).items() if not k.startswith("_")}
        vae_config.update(args.vae_config or {})
    module = WanVAETrainer(vae_config, decoder_only=args.decoder_only, lr=args.lr, kl_weight=args.kl_weight, mse_weight=args.mse_weight,
                           mouth_weight=args.mouth_weight, crop_size=args.crop_size,
                           mouth_crop_prob=args.mouth_crop_prob,
                           single_frame_prob=args.single_frame_prob, frames_per_clip=args.frames_per_clip,
                           sample_posterior=args.posterior == "sample", seed=args.seed)  # fmt: skip
    if args.init_from is not None and args.init_per_frame is not None:
        raise InputError("give --init-from or --init-per-frame, not both.")
    if args.init_from is not None or args.init_per_frame is not None:
        from diffusers import AutoencoderKLWan

        start = AutoencoderKLWan.from_pretrained(args.init_from or args.init_per_frame, torch_dtype=torch.float32)
        if args.init_per_frame is not None:
            start = per_frame_vae(start)
        try:
            module.vae.load_state_dict(start.state_dict(), strict=True)
        except RuntimeError as err:
            first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
            raise InputError(f"{args.init_from or args.init_per_frame} does not fit the demo VAE ({first}); give a VAE exported by this "
                             "trainer with the same settings.") from None  # fmt: skip
    root = args.root or str(Path(args.out) / "train")
    callbacks: list[pl.Callback] = [pl.callbacks.ModelCheckpoint(every_n_train_steps=args.checkpoint_every,
                                                                 save_last=True, save_top_k=-1)]  # fmt: skip
    if args.heldout is not None:
        callbacks.append(ReconstructionMonitor(heldout_videos(args.heldout, args.num_frames, args.eval_clips),
                                               args.eval_every, Path(root) / "heldout.csv"))  # fmt: skip
    trainer = pl.Trainer(max_steps=args.steps, accelerator=args.accelerator, devices=1, log_every_n_steps=10,
                         default_root_dir=root, limit_val_batches=0, enable_progress_bar=False,
                         gradient_clip_val=1.0, callbacks=callbacks)  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    out = module.export_vae(args.out, batches=datamodule.train_dataloader(), num_batches=args.stats_batches)
    stats = "kept from --init-from" if args.decoder_only else f"from {args.stats_batches} batches"
    print(f"VAE written to {out} (latents_mean / latents_std {stats})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
