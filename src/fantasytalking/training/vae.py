"""Training a small Wan VAE (diffusers ``AutoencoderKLWan``) on talking clips, for the ``demo`` preset.

:class:`WanVAETrainer` reads batches in the datamodule format (``batch["video"]``: ``(B, 3, N, H, W)`` in
``[-1, 1]``), so :class:`~fantasytalking.data.TalkingClipDataModule` (SynthTalk shards) and
:class:`~fantasytalking.training.SyntheticTalkingDataModule` both feed it. Loss::

    L = |x - D(z)|_1 + mse_weight * |x - D(z)|^2 + kl_weight * KL(q(z|x) || N(0, I))

with every term a per-element mean (so ``kl_weight`` is per latent element, not per pixel as in LDM's 1e-6
over sums). ``single_frame_prob`` trains a step on single frames (``(B*k, 3, 1, H, W)``: the causal VAE
encodes a first frame alone), several times cheaper than clips; the temporal layers learn on the clip steps.

:meth:`WanVAETrainer.export_vae` writes a ``save_pretrained`` folder whose ``latents_mean`` / ``latents_std``
are the per-channel statistics of the trained encoder's latents over a few batches, so the pipeline's
normalisation ``(z - mean) / std`` gives latents of about zero mean and unit variance per channel.

Example::

    trainer = lightning.Trainer(max_steps=2000, accelerator="cpu")
    module = WanVAETrainer(lr=2e-4, single_frame_prob=0.5)
    trainer.fit(module, datamodule=dm)
    module.export_vae("runs/demo_vae", batches=dm.train_dataloader())
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from fantasytalking.errors import InputError

__all__ = ["WanVAETrainer", "decode_unclamped", "latent_statistics"]


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


class WanVAETrainer(pl.LightningModule):
    """Trains an ``AutoencoderKLWan`` (encoder + decoder) as a KL autoencoder on video clips.

    Args:
        vae_config: ``AutoencoderKLWan`` constructor arguments (default: the demo preset's ``DEMO_VAE``).
        lr, weight_decay, betas: AdamW.
        mse_weight: weight of the squared error added to the L1 reconstruction loss.
        kl_weight: weight of the per-element KL to ``N(0, I)``.
        single_frame_prob: probability that a step trains on ``frames_per_clip`` single frames per clip
            instead of the whole clips (cheaper; 0 = clips only, 1 = images only).
        frames_per_clip: frames drawn per clip for a single-frame step.
        sample_posterior: decode a posterior sample (True, the KL-VAE objective) or its mode.
        seed: seed of the frame draws and posterior samples (a function of seed and step only).
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
        single_frame_prob: float = 0.0,
        frames_per_clip: int = 2,
        sample_posterior: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        from diffusers import AutoencoderKLWan

        if not 0.0 <= single_frame_prob <= 1.0 or frames_per_clip < 1:
            raise InputError("single_frame_prob must be in [0, 1] and frames_per_clip >= 1.")
        config = copy.deepcopy(dict(vae_config)) if vae_config is not None else _default_vae_config()
        self.save_hyperparameters({"vae_config": config})
        self.lr, self.weight_decay, self.betas = lr, weight_decay, tuple(betas)
        self.mse_weight, self.kl_weight = mse_weight, kl_weight
        self.single_frame_prob, self.frames_per_clip = single_frame_prob, frames_per_clip
        self.sample_posterior, self.seed = sample_posterior, int(seed)
        self.vae = AutoencoderKLWan(**config)

    # ------------------------------------------------------------------ data

    def _generator(self, batch_idx: int) -> torch.Generator:
        step = self.global_step if self._trainer is not None else batch_idx
        return torch.Generator().manual_seed(self.seed * 1_000_003 + int(step))

    def select_frames(self, video: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The step's input: the clips ``(B, 3, N, H, W)``, or single frames ``(B*k, 3, 1, H, W)``."""
        if self.single_frame_prob <= 0 or float(torch.rand((), generator=generator)) >= self.single_frame_prob:
            return video
        batch, channels, frames, height, width = video.shape
        k = min(self.frames_per_clip, frames)
        idx = torch.stack([torch.randperm(frames, generator=generator)[:k] for _ in range(batch)])  # (B, k)
        picked = video[torch.arange(batch)[:, None], :, idx.to(video.device)]  # (B, k, 3, H, W)
        return picked.reshape(batch * k, channels, 1, height, width)

    # ------------------------------------------------------------------ loss

    def compute_loss(self, video: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Loss terms of a video batch ``(B, 3, N, H, W)`` in ``[-1, 1]``; ``loss`` is the total."""
        if video.ndim != 5 or video.shape[1] != 3 or (video.shape[2] - 1) % 4:
            raise InputError(f"expected videos (B, 3, 4k+1, H, W), got {tuple(video.shape)}.")
        x = video.to(self.device, torch.float32)
        posterior = self.vae.encode(x).latent_dist  # mean / logvar (B, z, F, h, w)
        if self.sample_posterior:
            noise = torch.randn(posterior.mean.shape, generator=generator).to(x.device)
            z = posterior.mean + posterior.std * noise
        else:
            z = posterior.mean
        recon = decode_unclamped(self.vae, z)  # (B, 3, N, H, W); vae.decode's clamp would stop the gradient
        l1 = (recon - x).abs().mean()
        mse = (recon - x).square().mean()
        kl = 0.5 * (posterior.mean.square() + posterior.var - 1.0 - posterior.logvar).mean()
        loss = l1 + self.mse_weight * mse + self.kl_weight * kl
        return {"loss": loss, "l1": l1.detach(), "mse": mse.detach(), "kl": kl.detach(),
                "psnr": (10 * torch.log10(4.0 / mse.detach().clamp(min=1e-10)))}  # fmt: skip

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        generator = self._generator(batch_idx)
        video = self.select_frames(batch["video"], generator)
        out = self.compute_loss(video, generator)
        size = video.shape[0]
        for key, value in out.items():
            self.log(f"train/{key}", value, prog_bar=key == "loss", batch_size=size)
        self.log("train/frames", float(video.shape[2]), batch_size=size)
        return out["loss"]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed + batch_idx)
        out = self.compute_loss(batch["video"], generator)
        for key, value in out.items():
            self.log(f"val/{key}", value, batch_size=batch["video"].shape[0], sync_dist=True)
        return out["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.vae.parameters(), lr=self.lr, betas=self.betas,  # type: ignore[arg-type]
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
        training dataloader. Returns ``path``.
        """
        if batches is None:
            trainer = self._trainer
            if trainer is None:
                raise InputError("export_vae needs batches (or a trainer with a datamodule) for the latent statistics.")
            datamodule = getattr(trainer, "datamodule", None)
            batches = datamodule.train_dataloader() if datamodule is not None else trainer.train_dataloader
            if batches is None:
                raise InputError("the trainer has no training dataloader; pass batches to export_vae.")
        mean, std = self.latent_statistics(batches, num_batches)
        export = copy.deepcopy(self.vae).float().cpu().eval()
        export.register_to_config(latents_mean=[float(v) for v in mean], latents_std=[float(v) for v in std])
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        export.save_pretrained(str(out))
        return out


# ---------------------------------------------------------------------------------------------- command line


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
    parser.add_argument("--export-from", default=None,
                        help="no training: export this checkpoint (e.g. an interrupted run's last.ckpt) to --out")  # fmt: skip
    args = parser.parse_args(argv)

    pl.seed_everything(args.seed)
    datamodule = TalkingClipDataModule(args.shards, batch_size=args.batch_size, num_frames=args.num_frames,
                                       fields=("video",), seed=args.seed)  # fmt: skip
    if args.export_from is not None:
        module = WanVAETrainer.load_from_checkpoint(args.export_from, map_location="cpu")
        out = module.export_vae(args.out, batches=datamodule.train_dataloader(), num_batches=args.stats_batches)
        print(f"VAE of {args.export_from} written to {out}")
        return 0
    module = WanVAETrainer(lr=args.lr, kl_weight=args.kl_weight, mse_weight=args.mse_weight,
                           single_frame_prob=args.single_frame_prob, frames_per_clip=args.frames_per_clip,
                           sample_posterior=args.posterior == "sample", seed=args.seed)  # fmt: skip
    if args.init_from is not None:
        from diffusers import AutoencoderKLWan

        start = AutoencoderKLWan.from_pretrained(args.init_from, torch_dtype=torch.float32)
        try:
            module.vae.load_state_dict(start.state_dict(), strict=True)
        except RuntimeError as err:
            first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
            raise InputError(f"{args.init_from} does not fit the demo VAE ({first}); give a VAE exported by this "
                             "trainer with the same settings.") from None  # fmt: skip
    trainer = pl.Trainer(max_steps=args.steps, accelerator=args.accelerator, devices=1, log_every_n_steps=10,
                         default_root_dir=args.root or str(Path(args.out) / "train"), limit_val_batches=0,
                         enable_progress_bar=False, gradient_clip_val=1.0,
                         callbacks=[pl.callbacks.ModelCheckpoint(every_n_train_steps=args.checkpoint_every,
                                                                 save_last=True, save_top_k=-1)])  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    out = module.export_vae(args.out, batches=datamodule.train_dataloader(), num_batches=args.stats_batches)
    print(f"VAE written to {out} (latents_mean / latents_std from {args.stats_batches} batches)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
