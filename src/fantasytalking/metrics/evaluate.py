"""``fantasytalking evaluate``: score a folder of generated videos (ours or any other system's).

Examples::

    # no downloads needed: identity (dlib), motion dynamics, landmark lip sync
    fantasytalking evaluate --videos out/ --references refs/ --audio audio/ --out results.json

    # everything, with the public weights fetched by hand (see the error messages for addresses)
    fantasytalking evaluate --videos out/ --references gt_videos/ --audio audio/ \\
        --metrics fid,fvd,sync,lpips,identity,dynamics,lipsync \\
        --inception pt_inception-2015-12-05-6726825d.pth --i3d i3d_torchscript.pt --syncnet syncnet_v2.model \\
        --lpips-backbone alexnet-owt-7be5be79.pth --out results.json

Files are matched by stem: ``out/clip01.mp4`` goes with ``refs/clip01.png`` (or ``.mp4``: ground-truth video,
whose first frame is the identity reference) and ``audio/clip01.wav``. Without ``--audio`` each video's own audio
track is used. Writes ``results.json`` (aggregate + per-video values + settings) and ``results.md`` (tables).
Missing weights for a requested metric (or a bad ``--face-encoder arcface:PATH``), unmatched stems, and videos
without an audio track when lip sync is asked for without ``--audio`` stop the command before any video is decoded.

Which metric needs what: ``fid`` (real frames: reference videos or images), ``fvd`` and ``lpips`` (reference
videos), ``identity`` (references), ``sync`` and ``lipsync`` (speech), ``dynamics`` (nothing), ``synthtalk``
(``--synthtalk SHARDS``: the SynthTalk clips the videos were made from, named by sample key; chosen by default
when given)::

    fantasytalking evaluate --videos out/ --synthtalk shards/synthtalk-heldout --metrics synthtalk,dynamics \
        --out results.json
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from fantasytalking.errors import FantasyTalkingError, InputError

__all__ = [
    "ALL_METRICS",
    "NO_DOWNLOAD_METRICS",
    "add_evaluate_arguments",
    "evaluate_folders",
    "evaluate_from_args",
    "evaluate_main",
    "markdown_report",
]

log = logging.getLogger(__name__)

ALL_METRICS = ("fid", "fvd", "sync", "lpips", "identity", "dynamics", "lipsync", "synthtalk")
NO_DOWNLOAD_METRICS = ("identity", "dynamics", "lipsync")
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".m4a", ".ogg", *VIDEO_EXTS)
_WEIGHT_FOR = {"fid": "inception", "fvd": "i3d", "sync": "syncnet", "lpips": "alexnet"}
_DIRECTION = {
    "fid": "lower", "fvd": "lower", "sync_c": "higher", "sync_d": "lower", "lpips": "lower", "identity": "higher",
    "lipsync_corr": "higher", "synthtalk_lipsync": "higher", "synthtalk_closed_in_silence": "higher",
    "synthtalk_identity_error": "lower", "synthtalk_motion_corr": "higher",
}  # fmt: skip


def _files(folder: Path, exts: Sequence[str], what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{what} folder not found: {folder}")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in exts and not p.name.startswith("."):
            if p.stem in out:
                raise InputError(
                    f"two {what} files share the stem {p.stem!r} in {folder}: {out[p.stem].name}, {p.name}"
                )
            out[p.stem] = p
    return out


def _match(videos: dict[str, Path], others: dict[str, Path], what: str, flag: str) -> dict[str, Path]:
    missing = [s for s in videos if s not in others]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"no {what} with the same stem for {len(missing)} video(s) ({shown}); check {flag}")
    return {s: others[s] for s in videos}


def _parse_metrics(text: str | None, args: argparse.Namespace) -> list[str]:
    if text is None:
        chosen = [m for m in NO_DOWNLOAD_METRICS if m != "identity" or args.references is not None]
        chosen += ["synthtalk"] if args.synthtalk is not None else []
        given = {"fid": args.inception, "fvd": args.i3d, "sync": args.syncnet, "lpips": args.lpips_backbone}
        return [m for m in ALL_METRICS if m in chosen or (given.get(m) is not None and args.references is not None)
                or (m == "sync" and args.syncnet is not None)]  # fmt: skip
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in ALL_METRICS]
    if unknown or not names:
        raise InputError(f"unknown metric(s) {', '.join(unknown) or '(none)'}; choose from {','.join(ALL_METRICS)}")
    return [m for m in ALL_METRICS if m in names]


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``evaluate`` options to ``parser`` (the lead wires it as a ``fantasytalking`` subcommand)."""
    parser.add_argument("--videos", type=Path, required=True, help="folder of generated videos (.mp4 ...)")
    parser.add_argument(
        "--references",
        type=Path,
        default=None,
        help="folder of references by stem: images (identity, FID) or ground-truth videos (all)",
    )
    parser.add_argument(
        "--audio",
        type=Path,
        default=None,
        help="folder of speech files by stem (default: each video's own audio track)",
    )
    parser.add_argument(
        "--metrics",
        default=None,
        help=f"comma list from {','.join(ALL_METRICS)} (default: {','.join(NO_DOWNLOAD_METRICS)}, "
        "plus each metric whose weights are given, plus synthtalk with --synthtalk)",
    )
    parser.add_argument(
        "--synthtalk",
        type=Path,
        default=None,
        help="SynthTalk shard folder the videos were made from (video stem = sample key): adds the ground-truth "
        "measures (metric synthtalk: lip sync, closed mouth in silences, identity error, head motion)",
    )
    parser.add_argument("--inception", type=Path, default=None, help="pt_inception-2015-12-05-6726825d.pth (FID)")
    parser.add_argument("--i3d", type=Path, default=None, help="i3d_torchscript.pt (FVD)")
    parser.add_argument("--syncnet", type=Path, default=None, help="syncnet_v2.model (Sync-C, Sync-D)")
    parser.add_argument("--lpips-backbone", type=Path, default=None, help="alexnet-owt-7be5be79.pth (LPIPS)")
    parser.add_argument("--face-encoder", default="dlib", help="identity embeddings: 'dlib' or 'arcface:PATH'")
    parser.add_argument(
        "--download", action="store_true", help="download missing weights into the torch hub cache instead of stopping"
    )
    parser.add_argument("--device", default="cpu", help="torch device for the networks (e.g. cuda)")
    parser.add_argument("--fid-frame-stride", type=int, default=1, help="use every k-th frame for FID")
    parser.add_argument("--identity-frame-stride", type=int, default=4, help="embed every k-th frame for identity")
    parser.add_argument("--out", type=Path, required=True, help="results JSON (a .md table is written beside it)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing result files")
    return parser  # fmt: skip


def _check(args: argparse.Namespace, metrics: list[str]) -> tuple[dict[str, Path], dict[str, Path], dict[str, Path]]:
    """All checks that need no decoding: folders, stems, weights, output path. Returns matched files."""
    from fantasytalking.metrics.weights import resolve_weights

    for out in (args.out, args.out.with_suffix(".md")):
        if out.exists() and not args.overwrite:
            raise InputError(f"output file already exists: {out}; pass --overwrite or choose another name")
    if not args.out.parent.is_dir() and str(args.out.parent):
        raise InputError(f"output folder does not exist: {args.out.parent}; create it first")
    videos = _files(args.videos, VIDEO_EXTS, "video")
    if not videos:
        raise InputError(f"no video files ({', '.join(VIDEO_EXTS)}) in {args.videos}")
    refs: dict[str, Path] = {}
    needs_refs = [m for m in metrics if m in ("fid", "fvd", "lpips", "identity")]
    if needs_refs:
        if args.references is None:
            raise InputError(f"metric(s) {', '.join(needs_refs)} need --references DIR")
        refs = _match(
            videos, _files(args.references, VIDEO_EXTS + IMAGE_EXTS, "reference"), "reference file", "--references"
        )
        need_video = [m for m in needs_refs if m in ("fvd", "lpips")]
        images = [s for s, p in refs.items() if p.suffix.lower() not in VIDEO_EXTS]
        if need_video and images:
            raise InputError(f"{', '.join(need_video)} need ground-truth reference videos, but {refs[images[0]].name} "
                             "is an image; drop those metrics or give reference videos")  # fmt: skip
    audio: dict[str, Path] = {}
    speech_metrics = [m for m in metrics if m in ("sync", "lipsync")]
    if args.audio is not None and speech_metrics:
        audio = _match(videos, _files(args.audio, AUDIO_EXTS, "audio"), "audio file", "--audio")
    elif speech_metrics:
        from fantasytalking.io import video_header

        silent = [s for s, p in videos.items() if not video_header(p)["has_audio"]]
        if silent:
            shown = ", ".join(videos[s].name for s in silent[:3]) + (" ..." if len(silent) > 3 else "")
            raise InputError(f"{len(silent)} video(s) have no audio track ({shown}) for {', '.join(speech_metrics)}: "
                             "pass --audio DIR (speech files by stem) or leave them out with --metrics")  # fmt: skip
    if args.synthtalk is not None and "synthtalk" not in metrics:
        raise InputError("--synthtalk is given but --metrics leaves out synthtalk; add it or drop --synthtalk")
    args.synthtalk_truth = _synthtalk_truth(args, metrics, videos)
    args.face_encoder_obj = None
    if "identity" in metrics:
        from fantasytalking.face import make_face_encoder

        args.face_encoder_obj = make_face_encoder(args.face_encoder)  # loads ArcFace now: a bad file stops here
    given = {"inception": args.inception, "i3d": args.i3d, "syncnet": args.syncnet, "alexnet": args.lpips_backbone}
    for m in metrics:
        if m in _WEIGHT_FOR:
            key = _WEIGHT_FOR[m]
            given[key] = resolve_weights(key, given[key], download=args.download)
    args.resolved_weights = given
    return videos, refs, audio


def _synthtalk_truth(
    args: argparse.Namespace, metrics: list[str], videos: dict[str, Path]
) -> dict[str, tuple[Any, dict[str, Any]]]:
    """The ground truth of each video's SynthTalk clip (``stem -> (truth (N, C), truth.json)``), checked: the
    folder is a SynthTalk dataset, every stem is one of its keys, and every video runs at its frame rate."""
    if "synthtalk" not in metrics:
        return {}
    import json

    from fantasytalking.data.synthtalk import read_truth

    folder = args.synthtalk
    if folder is None:
        raise InputError("metric synthtalk needs --synthtalk DIR (the SynthTalk shards the videos were made from)")
    settings = Path(folder) / "synthtalk.json"
    if not settings.is_file():
        raise InputError(f"{folder} is not a SynthTalk dataset (no synthtalk.json); make one with fantasytalking synth")
    try:
        fps = float(json.loads(settings.read_text(encoding="utf-8"))["fps"])
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise InputError(f"{settings} is unreadable or has no fps ({type(err).__name__}: {err}); write the dataset "
                         "again with fantasytalking synth") from None  # fmt: skip
    try:
        clips = read_truth(folder)
    except InputError as err:
        raise InputError(f"{err} (a SynthTalk dataset: fantasytalking synth --out {folder})") from None
    if not clips:
        raise InputError(f"{folder} holds no SynthTalk ground truth (truth.npy); write it with fantasytalking synth")
    truth = _match(videos, clips, "SynthTalk clip", "--synthtalk (video stems must be sample keys)")  # type: ignore[arg-type]
    from fantasytalking.io import video_header

    for path in videos.values():
        rate = float(video_header(path)["fps"])
        if rate <= 0:
            raise InputError(f"{path.name} has no frame rate in its headers; re-export it at {fps:g} fps (the SynthTalk "
                             "truth is one row per frame at that rate)")  # fmt: skip
        if abs(rate - fps) > 1e-3 * fps:
            raise InputError(f"{path.name} runs at {rate:g} fps but the SynthTalk truth at {fps:g} fps; generate at "
                             f"the dataset's frame rate (--fps {fps:g})")  # fmt: skip
    return truth  # type: ignore[return-value]


def _reference_as_video(path: Path) -> torch.Tensor:
    """A reference image -> ``(3, 1, H, W)``; a reference video -> ``(3, F, H, W)``, in [0, 1]."""
    from fantasytalking.metrics.video import iter_images, read_video_file

    if path.suffix.lower() in VIDEO_EXTS:
        return read_video_file(path)[0]
    img = next(iter_images([path]))  # (H, W, 3) uint8
    return torch.from_numpy(img).permute(2, 0, 1)[:, None].float() / 255.0


def _scalar(v: Any) -> float:
    return float(v.item()) if isinstance(v, torch.Tensor) else float(v)


def evaluate_folders(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen metrics over matched files; returns the result dictionary (nothing written)."""
    metrics = _parse_metrics(args.metrics, args)
    videos, refs, audio = _check(args, metrics)
    w = args.resolved_weights
    device = torch.device(args.device)
    stems = list(videos)
    per_video: dict[str, dict[str, float]] = {s: {} for s in stems}
    aggregate: dict[str, float] = {}
    audio_list = [audio[s] for s in stems] if audio else None

    def finite(values: dict[str, Any], prefix: str) -> dict[str, float]:
        """Scalars of a metric's result; NaN / inf (a measure with nothing to measure) are left out."""
        out = {f"{prefix}{k}": _scalar(v) for k, v in values.items()}
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def run_per_video(metric: Any, call: Any, name: str, prefix: str = "") -> None:
        metric = metric.to(device)
        for i, s in enumerate(stems):
            log.info("%s: %s (%d/%d)", name, s, i + 1, len(stems))
            value = call(metric, i, s)
            per_video[s].update(finite(value if isinstance(value, dict) else {name: value}, prefix))
        total = metric.compute()
        aggregate.update(finite(total if isinstance(total, dict) else {name: total}, prefix))

    if "fid" in metrics or "fvd" in metrics:
        from fantasytalking.metrics.fid import FID
        from fantasytalking.metrics.fvd import FVD

        frechet: list[tuple[str, Any]] = []
        if "fid" in metrics:
            frechet.append(("fid", FID(w["inception"], frame_stride=args.fid_frame_stride).to(device)))
        if "fvd" in metrics:
            frechet.append(("fvd", FVD(w["i3d"]).to(device)))
        for s in stems:
            log.info("fid/fvd: %s", s)
            for _, m in frechet:
                m.update([videos[s]], real=False)
                m.update(_reference_as_video(refs[s])[None], real=True)
        for name, m in frechet:
            aggregate.update(finite({name: m.compute()}, ""))
    if "sync" in metrics:
        from fantasytalking.metrics.syncnet import SyncNetScore

        run_per_video(
            SyncNetScore(w["syncnet"]),
            lambda m, i, s: m([videos[s]], None if audio_list is None else [audio_list[i]]),
            "sync",
        )
    if "lipsync" in metrics:
        from fantasytalking.metrics.landmark_sync import LandmarkLipSync

        run_per_video(
            LandmarkLipSync(),
            lambda m, i, s: m([videos[s]], None if audio_list is None else [audio_list[i]]),
            "lipsync",
        )
    if "lpips" in metrics:
        from fantasytalking.metrics.lpips_metric import LPIPSVideo

        run_per_video(LPIPSVideo(w["alexnet"]), lambda m, i, s: m([videos[s]], [refs[s]]), "lpips")
    if "identity" in metrics:
        from fantasytalking.metrics.identity import IdentityConsistency

        idc = IdentityConsistency(encoder=args.face_encoder_obj, frame_stride=args.identity_frame_stride)
        run_per_video(idc, lambda m, i, s: m([videos[s]], [refs[s]]), "identity")
    if "dynamics" in metrics:
        from fantasytalking.metrics.dynamics import MotionDynamics

        run_per_video(MotionDynamics(), lambda m, i, s: m([videos[s]]), "dynamics")
    if "synthtalk" in metrics:
        from fantasytalking.data.synthtalk import Identity
        from fantasytalking.metrics.synthtalk_metric import SynthTalkMetric, truth_of

        def synthtalk_call(m: Any, i: int, s: str) -> Any:
            truth, info = args.synthtalk_truth[s]
            t = truth_of(truth, info)
            ref = Identity.from_dict(info["identity"]) if info.get("identity") else None
            return m([videos[s]], [t["truth_open"]], silent=[t["silent"]], references=[ref],
                     requested_motion=[t.get("requested_motion")])  # fmt: skip

        run_per_video(SynthTalkMetric(), synthtalk_call, "synthtalk", prefix="synthtalk_")
    return {
        "metrics": aggregate,
        "direction": {k: v for k, v in _DIRECTION.items() if k in aggregate},
        "num_videos": len(stems),
        "per_video": per_video,
        "settings": {
            "videos": str(args.videos),
            "references": None if args.references is None else str(args.references),
            "audio": None if args.audio is None else str(args.audio),
            "synthtalk": None if args.synthtalk is None else str(args.synthtalk),
            "metrics": metrics,
            "weights": {k: str(v) for k, v in w.items() if v is not None},
            "face_encoder": args.face_encoder,
            "device": str(device),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }


def markdown_report(result: dict[str, Any]) -> str:
    """The aggregate row and the per-video table as markdown."""
    agg = result["metrics"]
    arrows = {"lower": " (lower better)", "higher": " (higher better)"}
    lines = [f"# Evaluation of {result['num_videos']} video(s)", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k}{arrows.get(result['direction'].get(k, ''), '')} | {v:.5g} |" for k, v in agg.items()]
    cols = sorted({k for row in result["per_video"].values() for k in row})
    if cols:
        lines += ["", "## Per video", "", "| video | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
        for stem, row in result["per_video"].items():
            lines.append(f"| {stem} | " + " | ".join(f"{row[c]:.5g}" if c in row else "" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def evaluate_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate and write ``args.out`` (JSON) and its ``.md`` twin; returns the result dictionary."""
    from fantasytalking.io import write_json_atomic

    result = evaluate_folders(args)
    write_json_atomic(args.out, result, overwrite=True)
    md = args.out.with_suffix(".md")
    tmp = md.with_name(f".{md.name}.tmp{os.getpid()}")
    tmp.write_text(markdown_report(result), encoding="utf-8")
    os.replace(tmp, md)
    return result


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``fantasytalking evaluate ...`` as a function: 0 on success, 2 with one ``error:`` line on a user error."""
    parser = add_evaluate_arguments(
        argparse.ArgumentParser(prog="fantasytalking evaluate", description=__doc__.split("\n\n")[0])  # type: ignore[union-attr]
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = evaluate_from_args(args)
    except FantasyTalkingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown_report({**result, "per_video": {}}), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(evaluate_main())
