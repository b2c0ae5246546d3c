"""Checkpoints: exact resume, what they hold, stage two from stage one, export into the inference pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import soundfile as sf
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from safetensors.torch import load_file, save_file
from skimage.data import astronaut
from training_helpers import LossRecorder, one_thread, synthetic_batch, tiny_module, trainable_state, trainer  # noqa: F401 (one_thread: fixture)

from fantasytalking.errors import WeightsError
from fantasytalking.training import (
    EMACallback,
    StageOneClipAligner,
    StageTwoLipRefiner,
    SyntheticTalkingDataModule,
    export_checkpoint,
    export_conditioning,
    load_into_pipeline,
    read_export,
    read_export_config,
    tiny_pipeline,
)
from fantasytalking.training.module import is_pretrained_key

RESUME = {"face": True, "motion": True,
          "optim": {"lr": 1e-3, "schedule": "cosine", "warmup_steps": 2, "total_steps": 6}}  # fmt: skip


def data() -> SyntheticTalkingDataModule:
    return SyntheticTalkingDataModule(num_samples=2, batch_size=2)  # one batch an epoch


class Killer(pl.Callback):
    """Stops the run with an error after ``step`` optimiser steps, like a crash or a preemption."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError("killed")


def test_kill_and_resume_gives_the_same_losses(tmp_path):
    torch.manual_seed(0)
    straight = tiny_module(StageTwoLipRefiner, **RESUME)
    losses, ema = LossRecorder(), EMACallback(decay=0.5)
    trainer(tmp_path / "straight", 6, [losses, ema]).fit(straight, datamodule=data())

    torch.manual_seed(0)
    crashed = tiny_module(StageTwoLipRefiner, **RESUME)
    first = LossRecorder()
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    with pytest.raises(RuntimeError, match="killed"):
        trainer(tmp_path / "crash", 6, [first, EMACallback(decay=0.5), Killer(4), saver],
                enable_checkpointing=True).fit(crashed, datamodule=data())  # fmt: skip
    checkpoint = next((tmp_path / "ckpt").glob("*step=3.ckpt"))

    torch.manual_seed(123)  # another initialisation: the checkpoint must restore everything that matters
    resumed = tiny_module(StageTwoLipRefiner, **RESUME)
    rest, resumed_ema = LossRecorder(), EMACallback(decay=0.5)
    trainer(tmp_path / "resume", 6, [rest, resumed_ema]).fit(resumed, datamodule=data(), ckpt_path=checkpoint)

    assert first.losses[:3] == losses.losses[:3]
    assert rest.losses == losses.losses[3:]  # bit for bit
    for name, value in trainable_state(straight).items():
        assert torch.equal(value, resumed.get_parameter(name)), name
    for name, value in ema.ema_state_dict().items():
        assert torch.equal(value, resumed_ema.ema_state_dict()[name]), name


def test_checkpoint_holds_the_config_and_only_what_training_changed(tmp_path):
    module = tiny_module(StageOneClipAligner, face=True, motion=True)
    fit = trainer(tmp_path, 2, [EMACallback(decay=0.9)])
    fit.fit(module, datamodule=data())
    path = tmp_path / "final.ckpt"
    fit.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    info = ckpt["fantasytalking"]
    assert info["stage"] == "stage1" and info["config"]["audio_mode"] == "clip"
    assert info["config"]["face"]["dim"] == 32 and info["config"]["trainer"]["max_steps"] == 2
    json.dumps(info, default=str)  # JSON-friendly
    keys = set(ckpt["state_dict"])
    assert not any(is_pretrained_key(k) for k in keys)  # no frozen Wan / wav2vec2 weights
    assert keys == set(trainable_state(module)) | {
        "conditioning.conditioners.motion.raw_low", "conditioning.conditioners.motion.raw_high"}  # fmt: skip
    assert info["omitted_pretrained_keys"] > 0

    # Lightning's own loader rebuilds the module from the hyper-parameters and loads strictly.
    loaded = StageOneClipAligner.load_from_checkpoint(path)
    for name, value in trainable_state(module).items():
        assert torch.equal(value, loaded.get_parameter(name)), name
    ckpt["state_dict"].pop("conditioning.conditioners.face.queries")
    with pytest.raises(RuntimeError, match=r"face\.queries"):
        loaded.load_state_dict(ckpt["state_dict"])  # every non-frozen key must be there


def test_stage_two_starts_from_stage_one(tmp_path):
    stage1 = tiny_module(StageOneClipAligner, face=True, motion=True)
    ema = EMACallback(decay=0.5)
    fit = trainer(tmp_path, 2, [ema])
    fit.fit(stage1, datamodule=data())
    path = tmp_path / "stage1.ckpt"
    fit.save_checkpoint(path)

    stage2 = tiny_module(StageTwoLipRefiner, face=True, motion=True, init_from=str(path))
    assert stage2.audio_conditioner.mode == "frame"
    for name, value in trainable_state(stage1).items():
        assert torch.equal(value, stage2.get_parameter(name)), name
    from_ema = tiny_module(StageTwoLipRefiner, face=True, motion=True, init_from=str(path), init_from_ema=True)
    for name, value in ema.ema_state_dict().items():
        assert torch.equal(value, from_ema.get_parameter(name)), name
    assert stage2.hparams["init_from"] is None  # load_from_checkpoint does not need the stage-one file
    with pytest.raises(WeightsError, match="conditioners"):
        tiny_module(StageTwoLipRefiner, face=True, init_from=str(path))  # no motion conditioner this time


def _outputs(module_like, transformer, conditioning, batch) -> torch.Tensor:
    """Backbone output with every condition of the stack, for fixed inputs."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 36, 3, 4, 4, generator=g)
    text = torch.randn(1, 512, 32, generator=g)
    image = torch.randn(1, 5, 32, generator=g)
    inputs = {"audio": {"features": batch["audio_features"], "num_frames": 9}}
    if "face" in conditioning:
        inputs["face"] = {"features": batch["face_embedding"]}
    if "motion" in conditioning:
        inputs["motion"] = {"intensities": batch["motion"]}
    branches, time_embedding = conditioning.to_backbone(conditioning(inputs))
    return transformer(x, torch.tensor([500.0]), text, image, branches=branches, time_embedding=time_embedding)


def _randomise(module) -> None:
    """Give every trained tensor values away from its (zero) start, as after a long training."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for _, p in module.named_parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
        module.conditioning["motion"].set_statistics([0.1, 0.2], [0.9, 0.8])


@pytest.mark.parametrize("mode", ["conditioners", "lora"])
@torch.no_grad()
def test_exported_checkpoint_loads_into_the_inference_pipeline(tmp_path, mode):
    module = tiny_module(StageTwoLipRefiner, face=True, motion=True,
                         trainable={"mode": mode, "lora_rank": 4, "lora_alpha": 4})  # fmt: skip
    _randomise(module)
    fit = trainer(tmp_path, 0, [])
    fit.strategy.connect(module)
    fit.save_checkpoint(tmp_path / "stage2.ckpt")
    path = export_checkpoint(tmp_path / "stage2.ckpt", tmp_path / "trained.safetensors")
    tensors, config = read_export(path)
    assert "proj_model.proj.weight" in tensors and "blocks.1.cross_attn.processor.v_proj.weight" in tensors
    assert "blocks.0.cross_attn.processor.branches.face.k_proj.weight" in tensors and "motion.raw_low" in tensors
    assert config["audio"]["mode"] == "frame" and config["training"]["stage"] == "stage2"
    assert any(k.startswith("lora.") for k in tensors) == (mode == "lora")
    assert read_export_config(path) == config  # the metadata alone, as read_export gives it
    # the same file from the in-memory module
    again = export_conditioning(module, tmp_path / "again.safetensors")
    assert load_file(again).keys() == tensors.keys()

    pipe = tiny_pipeline()
    load_into_pipeline(pipe, path)
    assert pipe.conditioning.names == ["audio", "face", "motion"] and pipe.audio_conditioner.mode == "frame"
    batch = synthetic_batch(1, seed=2)
    batch["audio_features"] = torch.randn(1, 13, 32, generator=torch.Generator().manual_seed(1))
    module.eval()
    pipe.transformer.eval()
    expected = _outputs(module, module.transformer, module.conditioning, batch)
    torch.testing.assert_close(_outputs(pipe, pipe.transformer, pipe.conditioning, batch), expected)
    torch.testing.assert_close(pipe.conditioning["motion"].raw_low, torch.tensor([0.1, 0.2]))

    if mode == "conditioners":
        # The pipeline generates with the loaded weights (audio, identity from the detected face, motion).
        image = Image.fromarray(astronaut()[0:320, 96:416])
        audio = (0.1 * np.sin(np.linspace(0, 300, 6400))).astype(np.float32)
        result = pipe(image, audio, num_inference_steps=2, max_edge=64, progress=False, face_motion=0.9)
        assert result.frames.shape[1:] == (64, 64, 3) and result.settings.face_motion == 0.9

        # The CLI loads the same file with --conditioning, face motion included.
        from fantasytalking.cli import main
        from fantasytalking.testing import make_tiny_weights

        image.save(tmp_path / "face.png")
        sf.write(tmp_path / "speech.wav", audio, 16000)
        out = tmp_path / "cli.mp4"
        code = main(["generate", "--weights", str(make_tiny_weights(tmp_path / "w")), "--conditioning", str(path),
                     "--image", str(tmp_path / "face.png"), "--audio", str(tmp_path / "speech.wav"), "--output",
                     str(out), "--steps", "2", "--size", "64", "--face-motion", "0.2", "--quiet"])  # fmt: skip
        assert code == 0 and out.exists()
        assert json.loads(out.with_suffix(".json").read_text())["settings"]["face_motion"] == 0.2

        # Strict: a stray or a missing tensor is an error naming it.
        stray = dict(tensors, **{"face.extra": torch.zeros(1)})
        save_file(stray, str(tmp_path / "stray.safetensors"), metadata=_metadata(path))
        with pytest.raises(WeightsError, match=r"face\.extra"):
            load_into_pipeline(tiny_pipeline(), tmp_path / "stray.safetensors")
        missing = {k: v for k, v in tensors.items() if k != "blocks.1.cross_attn.processor.branches.face.v_proj.weight"}
        save_file(missing, str(tmp_path / "missing.safetensors"), metadata=_metadata(path))
        with pytest.raises(WeightsError, match=r"branches\.face\.v_proj"):
            load_into_pipeline(tiny_pipeline(), tmp_path / "missing.safetensors")
        save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        with pytest.raises(WeightsError, match="not a FantasyTalking conditioning export"):
            load_into_pipeline(tiny_pipeline(), tmp_path / "other.safetensors")
        with pytest.raises(WeightsError, match="not a FantasyTalking conditioning export"):
            read_export_config(tmp_path / "other.safetensors")


@torch.no_grad()
def test_motion_request_scale_travels_in_the_export_and_reaches_the_pipeline(tmp_path):
    """A model trained before the quantile tables gets one fitted to its stats.json; the pipeline then reads each
    request through it (request 0.5 = the median training clip), tensors unchanged, mismatched stats refused."""
    from fantasytalking.errors import InputError
    from fantasytalking.training.export import with_motion_request_scale

    module = tiny_module(StageTwoLipRefiner, face=False, motion=True)
    _randomise(module)  # statistics: face 0.1 -> 0.9, body 0.2 -> 0.8
    plain = export_conditioning(module, tmp_path / "plain.safetensors")
    assert "request_scale" not in read_export_config(plain)["conditioners"]["motion"]
    stats = {"face": {"p1": 0.1, "p99": 0.9, "quantiles": [0.1, 0.2, 0.3, 0.5, 0.9]},
             "body": {"p1": 0.2, "p99": 0.8, "quantiles": [0.2, 0.26, 0.32, 0.5, 0.8]}}  # fmt: skip
    scaled = tmp_path / "scaled.safetensors"
    table = with_motion_request_scale(plain, stats, scaled)
    np.testing.assert_allclose(np.array(table)[:, 0], [0.0, 0.125, 0.25, 0.5, 1.0], atol=1e-6)
    tensors, config = read_export(scaled)
    assert config["conditioners"]["motion"]["request_scale"] == table
    assert config["training"] == read_export_config(plain)["training"]
    for key, value in read_export(plain)[0].items():
        assert torch.equal(tensors[key], value)

    pipe = tiny_pipeline()
    load_into_pipeline(pipe, scaled)
    motion = pipe.conditioning["motion"]
    torch.testing.assert_close(motion.labels(torch.tensor([[0.5, 0.5]])), torch.tensor([[0.25, 0.2]]))
    image = Image.fromarray(astronaut()[0:320, 96:416])
    audio = (0.1 * np.sin(np.linspace(0, 300, 6400))).astype(np.float32)
    common = {"num_inference_steps": 2, "max_edge": 64, "progress": False}
    asked = pipe(image, audio, face_motion=0.5, body_motion=0.5, **common)
    assert (asked.settings.face_motion, asked.settings.body_motion) == (0.5, 0.5)  # the requests are recorded
    assert np.array_equal(pipe(image, audio, **common).frames, asked.frames)  # default 0.5 = the same request
    face_label, body_label = motion.labels(torch.tensor([[0.5, 0.5]]))[0].tolist()
    load_into_pipeline(pipe, plain)  # the same pipeline, a file without a scale: requests are labels again
    assert pipe.conditioning["motion"].request_scale is None
    as_labels = pipe(image, audio, face_motion=face_label, body_motion=body_label, **common)
    assert np.array_equal(as_labels.frames, asked.frames)  # the scaled request 0.5 is exactly these labels
    assert not np.array_equal(pipe(image, audio, **common).frames, asked.frames)  # label 0.5 is another motion

    with pytest.raises(InputError, match="not those of these stats"):
        with_motion_request_scale(plain, {n: {**v, "p99": 2.0} for n, v in stats.items()}, tmp_path / "x.safetensors")
    with pytest.raises(InputError, match="no face/body quantiles"):
        with_motion_request_scale(plain, {n: {"p1": 0.1, "p99": 0.9} for n in ("face", "body")},
                                  tmp_path / "x.safetensors")  # fmt: skip
    uneven = {"face": {**stats["face"], "quantiles": stats["face"]["quantiles"][:-1]}, "body": stats["body"]}
    with pytest.raises(InputError, match="different lengths"):  # the damage is named, not "no quantiles"
        with_motion_request_scale(plain, uneven, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    module.conditioning["motion"].set_statistics_from(stats)  # training on shards with quantile tables
    trained = export_conditioning(module, tmp_path / "trained.safetensors")
    assert read_export_config(trained)["conditioners"]["motion"]["request_scale"] == table


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()
