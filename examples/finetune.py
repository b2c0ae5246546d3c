"""Fine-tune FantasyTalking: stage one (clip-level alignment), then stage two (frame-level + lip mask).

Every choice is in the YAML files of ``examples/configs/`` (LightningCLI: later ``--config`` files and
``--section.key value`` flags override earlier ones). Each stage writes ``<default_root_dir>/final.ckpt``
(the training checkpoint, with its resolved configuration) and ``conditioning.safetensors`` (the trained
weights for inference, their EMA average when the config has the EMA callback; loaded with
``fantasytalking.training.load_into_pipeline``).

No arguments: a short two-stage fine-tune of the shipped demo model on freshly generated SynthTalk shards, then a
sample video of a held-out clip and its SynthTalk measures, beside the same clip through the model before the
fine-tune (a few minutes on a CPU)::

    python examples/finetune.py     # -> runs/quickstart/<time>/{sample.mp4,sample_before.mp4,sample_metrics.json}

Tiny CPU smoke run, both stages, random tiny models and synthetic clips (about a minute)::

    python examples/finetune.py stages --config examples/configs/tiny.yaml --root runs/tiny

The same on preprocessed shards (``fantasytalking preprocess videos/ shards/``)::

    python examples/finetune.py stages --config examples/configs/tiny.yaml --root runs/tiny \\
        --data fantasytalking.data.TalkingClipDataModule --data.init_args.shards shards/ \\
        --data.init_args.num_frames 9

Both stages of the paper on one node of 8 GPUs (DDP, bf16; see the configs)::

    python examples/finetune.py stages --root runs/finetune \\
        --model.init_args.backbone.weights weights/ --data.init_args.shards shards/

One stage at a time, or resuming (exactly: the same losses as without the interruption)::

    python examples/finetune.py fit --config examples/configs/stage1.yaml --model.init_args.backbone.weights weights/
    python examples/finetune.py fit --config examples/configs/stage1.yaml --ckpt_path runs/finetune/stage1/checkpoints/last.ckpt
    python examples/finetune.py fit --config examples/configs/stage2.yaml \\
        --model.init_args.init_from runs/finetune/stage1/final.ckpt

LoRA on the backbone with FSDP over the Wan blocks::

    python examples/finetune.py fit --config examples/configs/stage1.yaml --config examples/configs/fsdp.yaml

Several nodes (torchrun sets the ranks; Lightning reads them)::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint $HEAD:29500 \\
        examples/finetune.py stages --root runs/finetune --trainer.num_nodes 2

Export a checkpoint's weights for inference (``--ema``: its EMA average)::

    python examples/finetune.py export runs/finetune/stage2/final.ckpt trained.safetensors --ema
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parent / "configs"


def lightning_cli(args: list[str] | None = None, *, run: bool = True) -> Any:
    """The LightningCLI of one stage: ``fit --config stage1.yaml ...``; writes ``final.ckpt`` after fit."""
    from lightning.pytorch import LightningDataModule
    from lightning.pytorch.cli import LightningCLI

    from fantasytalking.training import EMACallback, FantasyTalkingModule, export_checkpoint

    # The frozen speech encoder stays in eval mode on purpose (no dropout); Lightning warns about it.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")

    class FantasyTalkingCLI(LightningCLI):
        def after_fit(self) -> None:
            trainer = self.trainer
            final = Path(trainer.default_root_dir) / "final.ckpt"
            trainer.save_checkpoint(final)  # every rank takes part (FSDP gathers); rank 0 writes
            trainer.strategy.barrier("final-checkpoint")
            if trainer.is_global_zero:
                ema = any(isinstance(c, EMACallback) for c in trainer.callbacks)
                out = export_checkpoint(final, final.with_name("conditioning.safetensors"), use_ema=ema)
                print(f"stage done: {final} and {out}{' (EMA weights)' if ema else ''}")

    return FantasyTalkingCLI(
        FantasyTalkingModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def run_stages(argv: list[str]) -> int:
    """Stage one, then stage two from its final checkpoint; other arguments go to both stages."""
    parser = argparse.ArgumentParser(prog="finetune.py stages", description=run_stages.__doc__)
    parser.add_argument("--stage1", default=str(CONFIGS / "stage1.yaml"), help="stage-one config")
    parser.add_argument("--stage2", default=str(CONFIGS / "stage2.yaml"), help="stage-two config")
    parser.add_argument("--root", default="runs/finetune", help="output folder: ROOT/stage1, ROOT/stage2")
    known, shared = parser.parse_known_args(argv)
    root = Path(known.root)
    stage1_dir, stage2_dir = root / "stage1", root / "stage2"
    # Each stage in its own process: a clean distributed setup per stage, under torchrun as under Lightning's launcher.
    commands = [
        ["fit", "--config", known.stage1, *shared, "--trainer.default_root_dir", str(stage1_dir)],
        ["fit", "--config", known.stage2, *shared, "--trainer.default_root_dir", str(stage2_dir),
         "--model.init_args.init_from", str(stage1_dir / "final.ckpt")],
    ]  # fmt: skip
    for number, command in enumerate(commands, start=1):
        print(f"stage {number}: {' '.join(command)}", flush=True)
        code = subprocess.call([sys.executable, str(Path(__file__).resolve()), *command])
        if code:
            print(f"stage {number} failed (exit code {code})", file=sys.stderr)
            return code
    return 0


def run_export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="finetune.py export", description="training checkpoint -> safetensors")
    parser.add_argument("checkpoint", help="a .ckpt written by a stage")
    parser.add_argument("output", help="the .safetensors file to write")
    parser.add_argument("--ema", action="store_true", help="export the EMA average")
    parser.add_argument("--motion-stats", default=None,
                        help="the training shards' stats.json: fit the motion request scale to its quantiles (for a "
                             "run on shards written before stats.json had them; docs/design.md)")  # fmt: skip
    args = parser.parse_args(argv)

    from fantasytalking.errors import FantasyTalkingError
    from fantasytalking.training import export_checkpoint

    stats = None
    if args.motion_stats is not None:
        try:
            stats = json.loads(Path(args.motion_stats).read_text())
        except (OSError, ValueError) as err:
            print(f"error: cannot read --motion-stats {args.motion_stats} ({err}); give the shards' stats.json",
                  file=sys.stderr)  # fmt: skip
            return 2
    try:
        print(export_checkpoint(args.checkpoint, args.output, use_ema=args.ema, motion_stats=stats))
    except FantasyTalkingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def export_model_flags(model: Path) -> list[str]:
    """The ``--model.init_args`` flags that rebuild the conditioners of an inference export as it was trained
    (``demo.yaml`` holds the preset's defaults; an export whose face path reads each feature vector as several
    keys, or that has no face conditioner, needs them, or the strict load refuses it)."""
    from fantasytalking.training.export import read_export_config

    conditioners = read_export_config(model).get("conditioners", {})
    face = conditioners.get("face")
    if face is None:
        return ["--model.init_args.face", "null"]
    return ["--model.init_args.face.feature_tokens", str(int(face.get("feature_tokens", 1)))]


def run_quickstart(argv: list[str]) -> int:
    """No arguments: a short two-stage fine-tune of the shipped demo model on freshly generated SynthTalk shards,
    then a sample video of a held-out clip and its SynthTalk measures, beside the same clip, settings and noise
    through the model before the fine-tune (a few minutes on a CPU)."""
    import datetime as dt

    parser = argparse.ArgumentParser(
        prog="finetune.py", description=run_quickstart.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="other modes (the module docstring has examples of each):\n"
        "  finetune.py stages --root DIR [LightningCLI flags]   stage one, then stage two from its final checkpoint\n"
        "  finetune.py fit|validate|test --config YAML ...      one stage (LightningCLI; 'fit --help' for its flags)\n"
        "  finetune.py export CKPT OUT.safetensors [--ema]      a checkpoint's weights for inference")
    parser.add_argument("--root", default=None, help="output folder (default: runs/quickstart/<time>)")
    parser.add_argument("--clips", type=int, default=32, help="SynthTalk clips to generate for training")
    parser.add_argument("--steps", type=int, default=10, help="training steps of each stage")
    parser.add_argument("--sample-steps", type=int, default=10, help="sampling steps of the sample video")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the SynthTalk data and of training")
    parser.add_argument("--demo-dir", type=Path, default=None, help="demo model folder (default: the packaged one)")
    known = parser.parse_args(argv)
    for flag, value in (("--clips", known.clips), ("--steps", known.steps), ("--sample-steps", known.sample_steps)):
        if value < 1:  # checked before minutes of data and training, not after them
            print(f"error: {flag} must be at least 1, got {value}", file=sys.stderr)
            return 2

    from fantasytalking.errors import FantasyTalkingError

    root = Path(known.root or f"runs/quickstart/{dt.datetime.now():%Y%m%d-%H%M%S}")
    if root.exists() and not root.is_dir():
        print(f"error: {root} is a file, not a folder; give another --root", file=sys.stderr)
        return 2
    if root.exists() and any(root.iterdir()):
        print(f"error: {root} is not empty; give another --root", file=sys.stderr)
        return 2
    try:
        return _quickstart(known, root)
    except FantasyTalkingError as err:  # e.g. espeak-ng missing, no face in the sample: one line, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


def _quickstart(known: argparse.Namespace, root: Path) -> int:
    """:func:`run_quickstart` after its arguments are checked: every input error is a ``FantasyTalkingError``."""
    from fantasytalking.data.synthtalk import SynthConfig, make_clip, write_synthtalk
    from fantasytalking.demo import card_int, check_demo_folder

    # the demo folder checked as `fantasytalking demo` checks it, before any data is made (a missing vae/ or a
    # card of another model would otherwise fail inside the stage-one process, with a traceback)
    demo = check_demo_folder(known.demo_dir)
    model, vae_dir = demo.model, demo.vae
    why = "the quickstart makes its data at the demo's clip length and size"
    frames, size = (card_int(demo.card, key, demo.card_path, why, minimum=1) for key in ("clip_frames", "size"))
    model_flags = export_model_flags(model)
    print(f"1/4 SynthTalk: {known.clips} clips of {frames} frames at {size} px -> {root / 'shards'}", flush=True)
    print(write_synthtalk(SynthConfig(out_dir=root / "shards", clips=known.clips, size=size, num_frames=frames,
                                      seed=known.seed, split="train")).summary(), flush=True)  # fmt: skip
    shared = [
        "--config", str(CONFIGS / "demo.yaml"),
        "--data.init_args.shards", str(root / "shards"),
        "--data.init_args.batch_size", "2",
        "--data.init_args.shuffle_buffer", "8",
        "--model.init_args.backbone.vae", str(vae_dir),
        "--model.init_args.backbone.seed", str(demo.seed),
        "--model.init_args.objective.cache_dir", str(root / "encode-cache"),
        "--model.init_args.optim.lr", "5e-5",          # fine-tuning a trained model: a tenth of the demo's
        "--model.init_args.optim.warmup_steps", "2",
        "--trainer.max_steps", str(known.steps),
        "--trainer.log_every_n_steps", "1",
        "--seed_everything", str(known.seed),
        *model_flags,
    ]  # fmt: skip
    stages = [
        ("2/4 stage one (clip-level), from the demo model", "stage1.yaml", str(model)),
        ("3/4 stage two (frame-level + lip mask), from stage one", "stage2.yaml", str(root / "stage1" / "final.ckpt")),
    ]
    for (title, config, init), name in zip(stages, ("stage1", "stage2")):
        print(title, flush=True)
        command = ["fit", "--config", str(CONFIGS / config), *shared, "--model.init_args.init_from", init,
                   "--trainer.default_root_dir", str(root / name)]  # fmt: skip
        code = subprocess.call([sys.executable, str(Path(__file__).resolve()), *command])
        if code:
            print(f"{name} failed (exit code {code})", file=sys.stderr)
            return code

    print("4/4 sample: a held-out SynthTalk clip (identity, sentence and voice never trained on), after and before "
          "fine-tuning", flush=True)
    from unittest import mock

    from PIL import Image

    from fantasytalking.io.video import write_json_atomic
    from fantasytalking.metrics import synthtalk as st
    from fantasytalking.training.presets import demo_pipeline

    generation = demo.defaults  # the demo folder's own generation settings, as `fantasytalking demo` uses them
    # the clip at the fps it is generated and scored at, so the truth's frames are the generated frames' times
    clip = make_clip(SynthConfig(size=size, num_frames=4 * frames - 3, fps=float(generation["fps"]), seed=known.seed,
                                 split="heldout"), 0)  # fmt: skip
    truth = clip.column("open")
    silent = st.long_silences(clip.column("speaking") <= 0, generation["fps"])
    landmarks = clip.landmarks[0]

    def sample(conditioning: Path) -> tuple[Any, Any, dict[str, Any]]:
        """The held-out clip's portrait and speech through ``conditioning``: ``(pipeline, result, measures)``."""
        pipe = demo_pipeline(vae_dir, seed=demo.seed, conditioning=conditioning)
        pipe.segment_frames = generation["segment_frames"]  # as the demo generates: one clip (docs/design.md)
        # A SynthTalk face at this size is below dlib's detection size: its true landmarks stand in for detection.
        with mock.patch("fantasytalking.face.detect_face_landmarks", lambda rgb: (None, landmarks)):
            out = pipe(Image.fromarray(clip.frames[0]), clip.audio, num_inference_steps=known.sample_steps,
                       max_edge=size, max_frames=clip.frames.shape[0], prompt_cfg=generation["prompt_cfg"],
                       audio_cfg=generation["audio_cfg"], fps=generation["fps"], seed=known.seed,
                       motion_gain=float(generation.get("motion_gain", 1.0)),
                       progress=False)  # fmt: skip
        scores = st.score_synthtalk(out.frames, truth, reference=clip.frames[0])
        n = min(len(scores.opening), len(truth))
        closed = None if not silent[:n].any() else st.mouth_closed_fraction(scores.opening[:n], silent[:n])
        return pipe, out, {**scores.as_dict(), "closed_in_long_silence": closed}

    # The same clip, settings and noise through the model before fine-tuning: what the fine-tune changed. Both are
    # made before either is written, so a failure leaves no sample.mp4 without its metrics.
    pipe_after, out_after, after = sample(root / "stage2" / "conditioning.safetensors")
    pipe_before, out_before, before = sample(model)
    pipe_after.save(out_after, root / "sample.mp4")
    pipe_before.save(out_before, root / "sample_before.mp4")
    metrics = {
        **after,
        "before": before,
        "clip": {k: clip.info[k] for k in ("identity_id", "sentence", "voice", "language")},
        "training": {"clips": known.clips, "steps_per_stage": known.steps, "seed": known.seed, "root": str(root)},
    }  # fmt: skip
    write_json_atomic(root / "sample_metrics.json", metrics)  # whole or not at all
    print(f"{'measure':<24}{'before':>10}{'after':>10}   (one held-out clip; before: {model})")
    for name, value in after.items():
        was = before[name]
        print(f"{name:<24}{'-' if was is None else f'{was:.3f}':>10}{'-' if value is None else f'{value:.3f}':>10}")
    print(f"sample video: {(root / 'sample.mp4').resolve()} (before fine-tuning: sample_before.mp4)\n"
          f"its metrics: {(root / 'sample_metrics.json').resolve()}")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    quickstart_options = ("--root", "--clips", "--steps", "--sample-steps", "--seed", "--demo-dir")
    if not args or args[0].split("=")[0] in quickstart_options or args in (["-h"], ["--help"]):
        return run_quickstart(args)
    if args[:1] == ["stages"]:
        return run_stages(args[1:])
    if args[:1] == ["export"]:
        return run_export(args[1:])
    lightning_cli(argv)  # None: LightningCLI reads sys.argv itself
    return 0


if __name__ == "__main__":
    sys.exit(main())
