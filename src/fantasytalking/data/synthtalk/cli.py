"""``fantasytalking synth``: write a SynthTalk dataset (shards in the preprocess format plus ground truth).

::

    fantasytalking synth --out data/synth-train --clips 500 --size 64 --fps 23 --frames 33 --seed 0
    fantasytalking synth --out data/synth-heldout --clips 50 --split heldout --seed 0
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from fantasytalking.data.synthtalk.bank import LANGUAGES, SPLITS
from fantasytalking.data.synthtalk.dataset import SynthConfig, SynthReport, write_synthtalk
from fantasytalking.errors import FantasyTalkingError

__all__ = ["add_synth_arguments", "config_from_args", "synth_from_args", "synth_main"]


def add_synth_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``synth`` options to ``parser``."""
    d = SynthConfig()
    p = parser
    p.add_argument("--out", type=Path, required=True, help="output folder (must not already hold a dataset)")
    p.add_argument("--clips", type=int, default=d.clips, help="number of clips")
    p.add_argument("--size", type=int, default=d.size, help="frame side in pixels (multiple of 16)")
    p.add_argument("--fps", type=float, default=d.fps, help="frame rate (FantasyTalking was trained at 23)")
    p.add_argument("--frames", "--num-frames", dest="num_frames", type=int, default=d.num_frames,
                   help="frames per clip, 4k+1 (17, 33, 81)")  # fmt: skip
    p.add_argument("--seed", type=int, default=d.seed, help="seed: the same seed writes the same samples")
    p.add_argument("--split", choices=SPLITS, default=d.split,
                   help="train, or heldout (sentences, voices and identities training never sees)")  # fmt: skip
    p.add_argument("--languages", nargs="+", choices=LANGUAGES, default=list(d.languages), help="spoken languages")
    p.add_argument("--identities", type=int, default=None,
                   help="identity pool size; each clip draws from it with replacement, so a pool as large as the "
                        "clip count gives about 63%% of it as distinct identities (--distinct-identities: all of "
                        "it; default: clips / 4)")  # fmt: skip
    p.add_argument("--distinct-identities", action="store_true",
                   help="clip i takes the pool's identity i mod pool: every identity appears once before any "
                        "repeats (with --identities equal to --clips: one identity per clip)")  # fmt: skip
    p.add_argument("--motion", type=float, default=None,
                   help="fixed requested motion intensity in [0, 1] (default: uniform per clip)")  # fmt: skip
    p.add_argument("--pause-share", type=float, default=0.0,
                   help="share of clips in [0, 1] whose window ends over the utterance's final pause (the mouth "
                        "closes in the clip; default 0: windows anywhere)")  # fmt: skip
    p.add_argument("--face-size", type=int, default=d.face_size, help="side of the aligned reference face.png")
    p.add_argument("--face-encoder", default=d.face_encoder,
                   help="face_embedding.npy: a face encoder as in preprocessing (dlib, head, dlib+head, "
                        "arcface:PATH), or identity: the identity parameters (faster, for tests)")  # fmt: skip
    p.add_argument("--clips-per-shard", type=int, default=d.clips_per_shard, help="samples per shard")
    p.add_argument("--crf", type=int, default=d.crf, help="H.264 quality of video.mp4 (lower is better)")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="processes drawing clips in parallel (the same shards for any number)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    return SynthConfig(
        out_dir=args.out, clips=args.clips, size=args.size, fps=args.fps, num_frames=args.num_frames,
        seed=args.seed, split=args.split, languages=tuple(args.languages), identities=args.identities,
        distinct_identities=bool(getattr(args, "distinct_identities", False)), motion=args.motion,
        pause_share=args.pause_share, face_size=args.face_size, face_encoder=args.face_encoder,
        clips_per_shard=args.clips_per_shard, crf=args.crf, workers=getattr(args, "workers", 1),
    )  # fmt: skip


def synth_from_args(args: argparse.Namespace) -> SynthReport:
    """Write the dataset the parsed options describe (what the CLI subcommand calls)."""
    quiet = bool(getattr(args, "quiet", False))
    step = max(1, args.clips // 20)

    def progress(done: int, total: int) -> None:
        if not quiet and (done % step == 0 or done == total):
            print(f"synth: {done}/{total} clips", file=sys.stderr, flush=True)

    return write_synthtalk(config_from_args(args), progress=progress)


def synth_main(argv: Sequence[str] | None = None) -> int:
    """``fantasytalking synth``: exit status 0 ok, 2 user error, 130 interrupted."""
    parser = argparse.ArgumentParser(
        prog="fantasytalking synth",
        description="Write SynthTalk: synthetic talking faces with espeak-ng speech, as training shards with "
        "ground truth (mouth opening, identity, motion).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    args = add_synth_arguments(parser).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        report = synth_from_args(args)
    except FantasyTalkingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; what the run had written was removed, run it again", file=sys.stderr)
        return 130
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(synth_main())
