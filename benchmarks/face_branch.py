"""What the demo's face branch does: identity with and without it, with and without the reference frame.

The issue's identity target compares the full model with the model whose face branch is off, both given the
portrait as the first frame (image-to-video). The reference frame alone already carries the identity, so a face
branch that learnt nothing passes or fails that comparison by noise. This benchmark separates the two sources: for
each model export and each of the first ``--clips`` held-out clips it generates the clip (``--frames`` frames, the
demo's settings) four ways:

* reference frame given (``y`` and the CLIP tokens as at inference), face branch on / off;
* reference frame withheld (``y`` and the CLIP tokens zero, exactly training's image dropout), face branch on /
  off: here the face tokens are the only identity the model gets, so a face branch that carries identity lowers
  the error clearly, and one that does not leaves it unchanged.

For every cell: identity error (``identity_error_over_frames`` against the clip's portrait), its face part
(skin colour and size), and lip-sync r; and per model and image setting the paired difference off - on (> 0: the
face branch helps) with the number of clips where it helps.

::

    python benchmarks/face_branch.py --model src/fantasytalking/assets/demo/model.safetensors runs/face/conditioning.safetensors
    python benchmarks/face_branch.py --model A --clips 4 --frames 33 --name quick
    python benchmarks/face_branch.py --clips 0 --train-shards shards/synthtalk   # only what the embeddings carry

Writes ``benchmarks/results/face-branch[-NAME]-<date>.{json,md}`` (device, date, commit, per model and cell).
SynthTalk faces at 96 px are below dlib's detection size: the clip's true first-frame landmarks stand in for face
detection, as in ``demo_targets.py``; the face embedding is then computed from the portrait as at inference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from demo_targets import record_header, save_record, score  # noqa: E402
from variants import file_sha256, heldout_clips  # noqa: E402

CELLS = ((True, True), (True, False), (False, True), (False, False))  # (reference frame given, face branch on)
MEASURES = ("identity_error", "identity_face_error", "lipsync")


#: Identity parameters the descriptor is read out against: name -> its values from ``truth.json``'s ``identity``.
READOUT = {
    "skin": lambda i: np.asarray(i["skin"]) / 255.0, "hair": lambda i: np.asarray(i["hair"]) / 255.0,
    "background": lambda i: np.asarray(i["background"]) / 255.0, "shirt": lambda i: np.asarray(i["shirt"]) / 255.0,
    "face width": lambda i: np.asarray([i["face_w"]]), "face aspect": lambda i: np.asarray([i["aspect"]]),
}  # fmt: skip


def embedding_readout(shards: Path, ridge: float = 0.01, seed: int = 0) -> dict[str, Any]:
    """How much of each identity parameter the shards' ``face_embedding`` carries: R^2 of a ridge read-out fitted
    on three quarters of the identities and scored on the rest (per channel, and the mean per parameter)."""
    from fantasytalking.data import format as fmt
    from fantasytalking.data import read_members
    from fantasytalking.data.synthtalk.dataset import TRUTH_JSON

    raw = read_members(shards, (fmt.FACE_EMBEDDING, TRUTH_JSON))
    emb = {k: fmt.from_npy(m[fmt.FACE_EMBEDDING]).ravel() for k, m in raw.items() if fmt.FACE_EMBEDDING in m}
    info = {k: fmt.read_json_bytes(m[TRUTH_JSON]) for k, m in raw.items() if TRUTH_JSON in m}
    keys = sorted(set(emb) & set(info))
    if len(keys) < 8:
        raise SystemExit(
            f"error: {shards} has {len(keys)} SynthTalk clips with a face embedding; the read-out needs 8 or more."
        )
    x = np.stack([emb[k] for k in keys]).astype(np.float64)  # (N, E)
    x = np.concatenate([x, np.ones((len(keys), 1))], axis=1)  # (N, E + 1): with a bias
    targets = {
        name: np.stack([get(info[k]["identity"]) for k in keys]).astype(np.float64) for name, get in READOUT.items()
    }
    people = np.array([info[k]["identity_id"] for k in keys])
    ids = np.unique(people)
    np.random.default_rng(seed).shuffle(ids)
    test = np.isin(people, ids[: max(1, len(ids) // 4)])  # a quarter of the identities: never in the fit
    y = np.concatenate(list(targets.values()), axis=1)  # (N, T)
    w = np.linalg.solve(x[~test].T @ x[~test] + ridge * np.eye(x.shape[1]), x[~test].T @ y[~test])
    resid = ((x[test] @ w - y[test]) ** 2).sum(0)
    total = ((y[test] - y[~test].mean(0)) ** 2).sum(0)
    r2 = 1.0 - resid / np.maximum(total, 1e-12)  # (T,)
    out, start = {}, 0
    for name, values in targets.items():
        part = r2[start : start + values.shape[1]]
        out[name] = {"r2": float(part.mean()), "per_channel": [float(v) for v in part]}
        start += values.shape[1]
    return {"shards": str(shards), "clips": len(keys), "identities": len(ids),
            "held_out_identities": int(np.unique(people[test]).size), "ridge": ridge, "parameters": out}  # fmt: skip


def cell_name(image: bool, face: bool) -> str:
    return f"{'frame given' if image else 'frame withheld'}, face {'on' if face else 'off'}"


def generate(pipe: Any, clip: dict[str, Any], gen: dict[str, Any], *, image: bool, face: bool) -> np.ndarray:
    """One clip's frames ``uint8 (N, H, W, 3)`` with the reference frame given or withheld, the face branch on or off."""
    import torch
    from PIL import Image

    encode_condition, encode_image = pipe.encode_condition, pipe.encode_image

    def withheld(encode: Any) -> Any:  # training's image dropout: y and the CLIP tokens set to zero
        return lambda *a, **k: torch.zeros_like(encode(*a, **k))

    lm = clip["landmarks"]
    off = {} if face else {"face_scale": 0.0}  # 0: the branch contributes nothing
    with (
        mock.patch.object(pipe, "encode_condition", encode_condition if image else withheld(encode_condition)),
        mock.patch.object(pipe, "encode_image", encode_image if image else withheld(encode_image)),
        mock.patch("fantasytalking.face.detect_face_landmarks", lambda rgb, _lm=lm: (None, _lm)),
    ):
        return pipe(Image.fromarray(clip["image"]), clip["audio"], **gen, **off).frames


def token_spread(pipe: Any, clips: list[dict[str, Any]]) -> dict[str, float]:
    """How much the face tokens, and the values the blocks' face branches read from them, differ between the clips'
    portraits: the rms distance to their mean over the mean's norm (0: the branch adds the same for everyone)."""
    import torch

    from fantasytalking.models.attention import BranchProjection

    conditioner = pipe.conditioning["face"]
    features = torch.stack([conditioner.embed(c["image"], c["landmarks"]).reshape(-1) for c in clips])  # (N, E)
    with torch.no_grad():
        tokens = conditioner(features).tokens.float()  # (N, Q, C)
        branches = [m for name, m in pipe.transformer.named_modules()
                    if isinstance(m, BranchProjection) and name.endswith("branches.face")]  # fmt: skip
        values = torch.stack(
            [b.v_proj(tokens.to(b.v_proj.weight.dtype)).float() for b in branches]
        )  # (blocks, N, Q, D)

    def spread(x: torch.Tensor, axis: int) -> float:
        mean = x.mean(axis, keepdim=True)
        return float((x - mean).norm(dim=-1).pow(2).mean().sqrt() / mean.norm(dim=-1).mean().clamp_min(1e-12))

    return {"tokens": spread(tokens, 0), "values": spread(values, 1), "portraits": len(clips)}


def measure(model: Path, vae: Path, seed: int, clips: list[dict[str, Any]], gen: dict[str, Any]) -> dict[str, Any]:
    from fantasytalking.training.presets import demo_pipeline

    pipe = demo_pipeline(vae, seed=seed, conditioning=model)
    if "face" not in pipe.conditioning:
        raise SystemExit(f"error: {model} has no face conditioner; pass an export trained with one.")
    spread = token_spread(pipe, clips)
    per_clip: dict[str, list[dict[str, Any]]] = {cell_name(*c): [] for c in CELLS}
    for clip in clips:
        for image, face in CELLS:
            frames = generate(pipe, clip, gen, image=image, face=face)
            scores = score(frames, clip, float(gen["fps"]))
            per_clip[cell_name(image, face)].append({"key": clip["key"], **{k: scores.get(k) for k in MEASURES}})
            print(
                model.name,
                clip["key"],
                cell_name(image, face),
                ", ".join(f"{k} {scores[k]:.4f}" for k in MEASURES if scores.get(k) is not None),
                flush=True,
            )
    cells = {name: {k: float(np.mean([c[k] for c in rows if c[k] is not None])) for k in MEASURES}
             for name, rows in per_clip.items()}  # fmt: skip
    effect = {}
    for image in (True, False):
        on, off = per_clip[cell_name(image, True)], per_clip[cell_name(image, False)]
        gaps = [b["identity_error"] - a["identity_error"] for a, b in zip(on, off)]  # > 0: the face branch helps
        face_gaps = [b["identity_face_error"] - a["identity_face_error"] for a, b in zip(on, off)]
        effect["frame given" if image else "frame withheld"] = {
            "identity_gap": float(np.mean(gaps)), "identity_face_gap": float(np.mean(face_gaps)),
            "clips_helped": int(sum(g > 0 for g in gaps)), "clips": len(gaps),
        }  # fmt: skip
    return {"model": str(model), "model_sha256": file_sha256(model), "token_spread": spread, "cells": cells, "effect": effect,
            "per_clip": per_clip}  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    g = report["generation"]
    if not report["models"]:  # --clips 0: the read-out alone
        lines = [f"The demo's face embedding: {report['date']}, commit {report['commit']}, {report['device']}."]
        return "\n".join(lines + readout_lines(report.get("readout"))) + "\n"
    lines = [f"The demo's face branch on the SynthTalk held-out split: {report['date']}, commit {report['commit']}, "
             f"{report['device']}; {report['clips']} clips of {g['max_frames']} frames, {g['num_inference_steps']} "
             f"steps, audio CFG {g['audio_cfg']}, each clip generated as one clip.", "",
             "| model | reference frame | face branch | identity error | face part | lip-sync r |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for m in report["models"]:
        for image, face in CELLS:
            c = m["cells"][cell_name(image, face)]
            lines.append(
                f"| `{m['model']}` | {'given' if image else 'withheld'} | {'on' if face else 'off'} | "
                f"{c['identity_error']:.4f} | {c['identity_face_error']:.4f} | {c['lipsync']:.3f} |"
            )
    lines += ["", "| model | reference frame | identity error off - on | face part off - on | clips where on is better |",
              "|---|---|---|---|---|"]  # fmt: skip
    for m in report["models"]:
        for where, e in m["effect"].items():
            lines.append(
                f"| `{m['model']}` | {where.split()[1]} | {e['identity_gap']:+.4f} | "
                f"{e['identity_face_gap']:+.4f} | {e['clips_helped']} of {e['clips']} |"
            )
    lines += [
        "",
        "| model | face tokens: spread between portraits | values the branches read: spread |",
        "|---|---|---|",
    ]
    for m in report["models"]:
        t = m["token_spread"]
        lines.append(f"| `{m['model']}` | {t['tokens']:.2%} | {t['values']:.2%} |")
    lines += ["", "Frame withheld: `y` and the CLIP tokens zero (training's image dropout), so the face tokens are "
              "the only identity given. Off - on > 0: the face branch lowers the identity error. Spread: the rms distance of "
              "each portrait's tokens (or branch values) to their mean over the clips, over the mean's norm; near 0 % "
              "the branch adds the same vector whatever the face."]  # fmt: skip
    return "\n".join(lines + readout_lines(report.get("readout"))) + "\n"


def readout_lines(r: dict[str, Any] | None) -> list[str]:
    lines: list[str] = []
    if r:
        lines += ["", f"What the face embedding carries (`{r['shards']}`, {r['clips']} clips; ridge read-out fitted on "
                  f"{r['identities'] - r['held_out_identities']} identities, R^2 on the other {r['held_out_identities']}):",
                  "", "| identity parameter | R^2 | per channel |", "|---|---|---|"]  # fmt: skip
        for name, v in r["parameters"].items():
            lines.append(f"| {name} | {v['r2']:.2f} | {', '.join(f'{c:.2f}' for c in v['per_channel'])} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    from fantasytalking.demo import DEMO_DIR, DEMO_GENERATION, demo_card

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, nargs="+", default=[DEMO_DIR / "model.safetensors"],
                   help="demo model exports (conditioning.safetensors / the package's model.safetensors)")  # fmt: skip
    p.add_argument("--vae", type=Path, default=DEMO_DIR / "vae")
    p.add_argument("--seed", type=int, default=None, help="seed of the frozen random encoders (default: the card's)")
    p.add_argument("--heldout", type=Path, default=Path("shards/synthtalk-heldout"))
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--steps", type=int, default=DEMO_GENERATION["num_inference_steps"], help="sampling steps")
    p.add_argument("--train-shards", type=Path, default=None,
                   help="SynthTalk training shards: also report what their face_embedding carries of each identity "
                        "parameter (a ridge read-out on identities left out of the fit)")  # fmt: skip
    p.add_argument("--name", default="", help="record name suffix")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    for path in [*args.model, args.vae]:
        if not path.exists():
            raise SystemExit(f"error: {path} does not exist; pass an exported demo model (--model) and VAE (--vae).")
    header = record_header()
    seed = args.seed if args.seed is not None else int(demo_card()["seed"])
    clips = heldout_clips(args.heldout, {"frames": args.frames, "fps": 23})[: args.clips]
    gen = dict(num_inference_steps=args.steps, max_edge=DEMO_GENERATION["max_edge"],
               fps=23, max_frames=args.frames, prompt_cfg=1.0, audio_cfg=DEMO_GENERATION["audio_cfg"],
               segment_frames=0, seed=0, progress=False)  # fmt: skip
    report = {**header, "clips": len(clips), "heldout": str(args.heldout), "vae": str(args.vae), "seed": seed,
              "generation": gen, "models": [measure(m, args.vae, seed, clips, gen) for m in args.model] if clips else []}  # fmt: skip
    if args.train_shards is not None:
        report["readout"] = embedding_readout(args.train_shards)
    prefix = "face-branch-" + (f"{args.name}-" if args.name else "")
    return save_record(args.out, prefix, report, markdown(report))


if __name__ == "__main__":
    raise SystemExit(main())
