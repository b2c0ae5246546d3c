"""Command line: ``fantasytalking generate ...``.

Examples::

    # the embedded default: the trained demo model (SynthTalk faces), bundled inputs, CPU, no download
    fantasytalking demo

    # try it without the 80 GB download: tiny random weights, runs on CPU in seconds
    python -m fantasytalking.testing make-tiny-weights /tmp/tiny --layout original
    fantasytalking generate --weights /tmp/tiny --image face.png --audio speech.wav --output out.mp4

    # the real model (see docs/weights.md)
    fantasytalking generate --weights weights/ --image face.png --audio speech.wav \\
        --prompt "A woman is talking." --output out.mp4 --device cuda --dtype bfloat16

    # training data (docs/training.md)
    fantasytalking preprocess videos/ --out shards/ --fps 23 --size 512 --num-frames 81

    # scoring any system's videos (docs/evaluation.md)
    fantasytalking evaluate --videos out/ --references refs/ --out results.json

Every user error (missing file, unreadable audio, image too small, weights missing or of the
wrong size, output exists) prints one line ``error: ...`` and exits with status 2, writing nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from fantasytalking.errors import FantasyTalkingError, non_negative

DTYPES = ("float32", "bfloat16", "float16")


#: Where `fantasytalking demo` writes by default.
DEMO_OUTPUT = Path("outputs/demo.mp4")


def _steps_range(text: str) -> tuple[int, int]:
    try:
        first, last = (int(v) for v in text.split("-"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected FIRST-LAST (e.g. 0-20), got {text!r}") from err
    return first, last


def build_parser() -> argparse.ArgumentParser:
    from fantasytalking.pipeline import DEFAULT_PROMPT, GenerationSettings

    defaults = GenerationSettings()
    parser = argparse.ArgumentParser(prog="fantasytalking", description="FantasyTalking talking-portrait video.")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser(
        "generate",
        help="generate a talking video from a portrait and a speech track",
        description="Generate a talking video (mp4 with sound, plus a JSON sidecar of every setting).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    gen.add_argument("--weights", type=Path, help="folder holding the Wan2.1-I2V-14B-720P folder (original or "
                     "-Diffusers layout), wav2vec2-base-960h and fantasytalking_model.ckpt; see docs/weights.md")
    gen.add_argument("--wan", help="Wan2.1-I2V-14B-720P folder or hub name (overrides --weights)")
    gen.add_argument("--wav2vec", help="wav2vec2 folder or hub name (overrides --weights)")
    gen.add_argument("--fantasytalking", help="fantasytalking_model.ckpt or .safetensors (overrides --weights)")
    gen.add_argument("--conditioning", type=Path, default=None,
                     help="trained conditioning weights exported by examples/finetune.py (audio, and face/motion "
                     "when trained with them), loaded over the audio weights")
    gen.add_argument("--allow-download", action="store_true",
                     help="let hub names download missing weights (needs a network)")
    gen.add_argument("--image", type=Path, required=True, help="portrait image (any format PIL reads)")
    gen.add_argument("--face-image", type=Path, default=None,
                     help="portrait the face conditioner embeds when --image is not it (e.g. --image is the last "
                     "frame of an earlier clip); weights with a face conditioner only")
    gen.add_argument("--audio", type=Path, required=True, help="speech (wav/flac/mp3/m4a/...; any sample rate)")
    gen.add_argument("--output", type=Path, required=True, help="output .mp4 (its settings go to the same name .json)")
    gen.add_argument("--prompt", default=DEFAULT_PROMPT, help="text prompt")
    gen.add_argument("--negative-prompt", default=None, help="negative prompt (default: Wan's standard one)")
    gen.add_argument("--steps", type=int, default=defaults.num_inference_steps, help="denoising steps")
    gen.add_argument("--size", type=int, default=defaults.max_edge,
                     help="longest edge in pixels (sides rounded up to multiples of 16)")
    gen.add_argument("--fps", type=int, default=defaults.fps, help="frames per second (weights trained at 23)")
    gen.add_argument("--max-frames", type=int, default=defaults.max_frames, help="most frames of the clip (4k+1)")
    gen.add_argument("--seed", type=int, default=defaults.seed, help="noise seed")
    gen.add_argument("--prompt-cfg", type=float, default=defaults.prompt_cfg, help="prompt guidance scale")
    gen.add_argument("--audio-cfg", type=float, default=defaults.audio_cfg, help="audio guidance scale")
    gen.add_argument("--audio-scale", type=float, default=defaults.audio_scale,
                     help="weight of the audio attention (0 = no audio)")
    gen.add_argument("--audio-guidance-steps", type=_steps_range, default=None, metavar="FIRST-LAST",
                     help="steps (0-based, inclusive) with separate audio guidance; default all. Keep >= 70%%")
    gen.add_argument("--face-motion", type=float, default=None,
                     help="facial motion intensity in [0, 1] (0.1 subtle, 0.5 natural, 1.0 intense; default 0.5); "
                     "needs weights with a motion conditioner")
    gen.add_argument("--body-motion", type=float, default=None,
                     help="body motion intensity in [0, 1] (default 0.5); needs weights with a motion conditioner")
    gen.add_argument("--face-scale", type=float, default=None,
                     help="weight of the face (identity) branch (default: as trained, 0.5 in the paper; 0 = off); "
                     "needs weights with a face conditioner")
    gen.add_argument("--motion-gain", type=float, default=1.0,
                     help="strength of the requested motion: >1 exaggerates the difference from the default "
                     "intensities, 1 is as trained (docs/design.md); needs weights with a motion conditioner")
    gen.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    gen.add_argument("--dtype", choices=DTYPES, default=None,
                     help="model dtype (default: bfloat16 on a GPU, float32 on CPU)")
    gen.add_argument("--offload", action="store_true",
                     help="keep models on the CPU and move each to the GPU only while it runs (less GPU memory)")
    gen.add_argument("--batch-passes", action="store_true",
                     help="run each step's guidance passes as one batch (faster on GPUs, more memory)")
    gen.add_argument("--segment-frames", type=int, default=None,
                     help="make long speech from clips of this many frames (4k+1), each continuing the last; "
                     "0: one clip as the release (default: the weights' own; one clip for the release's)")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing output")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    demo = commands.add_parser(
        "demo",
        help="the embedded default: the trained demo model on a bundled SynthTalk portrait and speech (CPU)",
        description="Generate with the demo model shipped in the package (trained on SynthTalk; docs/demo.md): "
        "no download, CPU. Defaults: the bundled held-out portrait and ~4 s of speech.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--demo-dir", type=Path, default=None,
                      help="a packaged demo model folder (default: the one shipped in the package; see docs/demo.md)")
    demo.add_argument("--image", type=Path, default=None, help="portrait (default: the bundled SynthTalk face)")
    demo.add_argument("--audio", type=Path, default=None, help="speech (default: the bundled sentence)")
    demo.add_argument("--output", type=Path, default=DEMO_OUTPUT, help="mp4 to write (the default's folder is created)")
    demo.add_argument("--steps", type=int, default=None, help="sampling steps (default: the demo's, 20)")
    demo.add_argument("--seed", type=int, default=defaults.seed, help="noise seed")
    demo.add_argument("--audio-cfg", type=float, default=None, help="audio guidance (default: the demo's)")
    demo.add_argument("--face-motion", type=float, default=None, help="face motion intensity in [0, 1]")
    demo.add_argument("--body-motion", type=float, default=None, help="body motion intensity in [0, 1]")
    demo.add_argument("--motion-gain", type=float, default=None,
                      help="strength of the requested motion (default: the demo's; 1 is as trained)")
    demo.add_argument("--face-scale", type=float, default=None,
                      help="weight of the face (identity) branch (default: as trained, 0.5; 0 = off; docs/demo.md)")
    demo.add_argument("--segment-frames", type=int, default=None,
                      help="make the speech from clips of this many frames (4k+1, e.g. 17, the training length), "
                      "each continuing the last (default: the demo's, 0: one clip; docs/demo.md)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing output")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")

    from fantasytalking.data.preprocess import add_preprocess_arguments

    prep = commands.add_parser(
        "preprocess",
        help="cut talking videos with sound into WebDataset training shards",
        description="Cut talking videos with sound into WebDataset shards of face-centred clips for training "
        "(landmarks, lip masks, reference face, motion intensities; resumable; see docs/training.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_preprocess_arguments(prep)

    from fantasytalking.data.synthtalk import add_synth_arguments

    synth = commands.add_parser(
        "synth",
        help="write SynthTalk shards: procedurally drawn faces speaking espeak-ng sentences, with ground truth",
        description="Write SynthTalk WebDataset shards (the preprocess format plus per-frame ground truth), "
        "deterministically from a seed; --split heldout uses sentences, voices and identities training never sees.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_synth_arguments(synth)

    from fantasytalking.data.reembed import add_reembed_arguments

    reembed = commands.add_parser(
        "reembed",
        help="copy a shard folder with every clip's face embedding made by another face encoder",
        description="Copy a shard folder with face_embedding.npy recomputed by another face encoder (e.g. "
        "'dlib+head') from each clip's first frame and landmarks; every other member unchanged (docs/training.md).",
    )
    add_reembed_arguments(reembed)

    from fantasytalking.metrics.evaluate import add_evaluate_arguments

    ev = commands.add_parser(
        "evaluate",
        help="score generated videos (FID, FVD, Sync-C/D, LPIPS, identity, dynamics, lip sync)",
        description="Score a folder of generated videos (any system's) against references and speech; "
        "writes a JSON and a markdown table.",
    )
    add_evaluate_arguments(ev)
    return parser


def _generate(args: argparse.Namespace) -> Path:
    import torch

    from fantasytalking import io as ftio
    from fantasytalking.pipeline import WAN_NEGATIVE_PROMPT, FantasyTalkingPipeline

    # Cheap checks first: fail before loading gigabytes.
    ftio.check_outputs(args.output, overwrite=args.overwrite)
    ftio.load_image(args.image)
    if args.face_image is not None:
        ftio.load_image(args.face_image)
    ftio.load_audio(args.audio)
    if args.steps < 1:
        raise FantasyTalkingError(f"--steps must be at least 1, got {args.steps}.")
    if args.fps < 1 or args.size < 16 or args.max_frames < 5:
        raise FantasyTalkingError("--fps must be >= 1, --size >= 16 and --max-frames >= 5.")

    device = torch.device(args.device)
    dtype_name = args.dtype or ("float32" if device.type == "cpu" else "bfloat16")
    dtype = getattr(torch, dtype_name)
    if args.weights is None and not (args.wan and args.wav2vec and args.fantasytalking):
        raise FantasyTalkingError("give --weights DIR (or all of --wan, --wav2vec and --fantasytalking).")
    pipe = FantasyTalkingPipeline.from_pretrained(
        args.weights, wan=args.wan, wav2vec=args.wav2vec, fantasytalking=args.fantasytalking,
        conditioning=args.conditioning, device="cpu" if args.offload else device, dtype=dtype, local_files_only=not args.allow_download,
    )
    if args.offload:
        pipe.enable_model_cpu_offload(device=device)
    result = pipe(
        args.image, args.audio, args.prompt,
        WAN_NEGATIVE_PROMPT if args.negative_prompt is None else args.negative_prompt,
        num_inference_steps=args.steps, max_edge=args.size, fps=args.fps, max_frames=args.max_frames,
        prompt_cfg=args.prompt_cfg, audio_cfg=args.audio_cfg, audio_scale=args.audio_scale,
        audio_guidance_steps=args.audio_guidance_steps, seed=args.seed, progress=not args.quiet,
        face_motion=args.face_motion, body_motion=args.body_motion, motion_gain=args.motion_gain,
        face_scale=args.face_scale, batch_passes=args.batch_passes,
        segment_frames=args.segment_frames, face_image=args.face_image,
    )
    for note in result.settings.notes:
        print(f"note: {note}", file=sys.stderr)
    return pipe.save(result, args.output, overwrite=args.overwrite)


def _demo(args: argparse.Namespace) -> Path:
    import time

    from fantasytalking import io as ftio
    from fantasytalking.demo import demo_inputs, domain_note, load_demo

    if args.output == DEMO_OUTPUT:  # the demo's own default place: made on a fresh checkout
        DEMO_OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    ftio.check_outputs(args.output, overwrite=args.overwrite)
    # only the bundled inputs that are used must be there: a packaged folder of your own may have none
    bundled_image, bundled_audio = demo_inputs(args.demo_dir, image=args.image is None, audio=args.audio is None)
    image = ftio.load_image(args.image or bundled_image)
    ftio.load_audio(args.audio or bundled_audio)
    if args.steps is not None and args.steps < 1:  # before the model is loaded
        raise FantasyTalkingError(f"--steps must be at least 1, got {args.steps}.")
    for flag, value in (("--face-scale", args.face_scale), ("--motion-gain", args.motion_gain)):
        if value is not None:  # before the model is loaded
            non_negative(value, flag)
    start = time.perf_counter()
    pipe = load_demo(args.demo_dir)
    ftio.check_image_size(image, min_side=pipe.min_image_side, path=args.image)  # before the domain note
    note = domain_note(image)
    if note:
        print(f"note: {note}", file=sys.stderr)
    settings = dict(pipe.demo_defaults)
    if args.steps is not None:
        settings["num_inference_steps"] = args.steps
    if args.audio_cfg is not None:
        settings["audio_cfg"] = args.audio_cfg
    if args.motion_gain is not None:
        settings["motion_gain"] = args.motion_gain
    if args.segment_frames is not None:
        settings["segment_frames"] = args.segment_frames
    if args.face_scale is not None:
        settings["face_scale"] = args.face_scale
    result = pipe(image, args.audio or bundled_audio, seed=args.seed, face_motion=args.face_motion,
                  body_motion=args.body_motion, progress=not args.quiet, **settings)  # fmt: skip
    for line in result.settings.notes:
        print(f"note: {line}", file=sys.stderr)
    path = pipe.save(result, args.output, overwrite=args.overwrite)
    frames = result.frames.shape[0]
    print(f"demo: {frames} frames ({frames / result.fps:.1f} s at {result.fps} fps, "
          f"{result.settings.width}x{result.settings.height}) in {time.perf_counter() - start:.0f} s")  # fmt: skip
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s: %(message)s")
    try:
        if args.command == "generate":
            path = _generate(args)
            print(f"wrote {path}")
        elif args.command == "demo":
            path = _demo(args)
            print(f"wrote {path.resolve()} (settings: {path.with_suffix('.json').resolve()})")
        elif args.command == "preprocess":
            from fantasytalking.data.preprocess import preprocess_from_args

            print(preprocess_from_args(args).summary())
        elif args.command == "synth":
            from fantasytalking.data.synthtalk import synth_from_args

            report = synth_from_args(args)
            print(report.summary())
        elif args.command == "reembed":
            from fantasytalking.data.reembed import reembed_from_args

            record = reembed_from_args(args)
            print(f"wrote {args.out}: {record['clips']} clips, face_embedding by {record['encoder_name']} "
                  f"({record['embedding_dim']}-d)")
        elif args.command == "evaluate":
            from fantasytalking.metrics.evaluate import evaluate_from_args, markdown_report

            result = evaluate_from_args(args)
            print(markdown_report({**result, "per_video": {}}), end="")
    except FantasyTalkingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
