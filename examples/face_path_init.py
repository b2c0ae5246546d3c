"""A start for retraining the face path alone: an export with a FRESH face conditioner, standardised on the shards.

Everything in ``--model`` is kept except the identity path: the face conditioner (Q-Former) is rebuilt from the
export's own face config with ``--feature-tokens`` keys per face vector, its ``input_proj`` reads the features
standardised by the mean and standard deviation of the shards' ``face_embedding``
(:meth:`~fantasytalking.conditioning.face.FaceConditioner.standardize_input`), and the face branch of every block
is zero again (a fresh branch leaves the model's output unchanged). Then train the face path alone
(``--model.init_args.trainable.only '[face]'`` with ``--model.init_args.face.feature_tokens`` the same value), as
docs/demo.md's "Tried and not shipped" section for the identity does::

    python examples/face_path_init.py --model src/fantasytalking/assets/demo/model.safetensors \\
        --shards shards/synthtalk --feature-tokens 8 --out runs/face-init.safetensors

The output is written whole or not at all, and an existing one is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    import torch
    from safetensors import safe_open

    from fantasytalking.conditioning.face import FaceConditioner
    from fantasytalking.data import format as fmt
    from fantasytalking.data import read_members
    from fantasytalking.errors import InputError
    from fantasytalking.loading.files import save_safetensors

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", type=Path, required=True, help="an export with a face conditioner (conditioning.safetensors)"
    )
    p.add_argument("--shards", required=True, help="the training shards (their face_embedding gives the statistics)")
    p.add_argument("--feature-tokens", type=int, default=8, help="Q-Former keys per face vector (1: as before)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fresh conditioner's weights")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        if args.out.exists():
            raise InputError(f"{args.out} exists; choose another --out or remove it.")
        try:
            with safe_open(str(args.model), "pt") as f:
                metadata = dict(f.metadata() or {})
                weights = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
        except Exception as err:  # missing, truncated or not safetensors: say which file, not a traceback
            raise InputError(f"{args.model} is not a readable safetensors export ({err}); pass a demo model export "
                             "such as src/fantasytalking/assets/demo/model.safetensors.") from err  # fmt: skip
        config = json.loads(metadata.get("config", "{}"))
        face_config = dict(config.get("conditioners", {}).get("face") or {})
        if not face_config:
            raise InputError(f"{args.model} has no face conditioner; start from an export trained with one.")
        features = [
            fmt.from_npy(m[fmt.FACE_EMBEDDING]).ravel()
            for m in read_members(args.shards, [fmt.FACE_EMBEDDING]).values()
        ]
        if len(features) < 2:
            raise InputError(f"{args.shards} has {len(features)} face embeddings; the statistics need at least 2.")
        stack = torch.from_numpy(np.stack(features).astype(np.float32))  # (N, E)
        face_config["feature_tokens"] = args.feature_tokens
        torch.manual_seed(args.seed)
        face = FaceConditioner(**face_config)
        face.standardize_input(stack.mean(0), stack.std(0, unbiased=False))
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    weights = {k: v for k, v in weights.items() if not k.startswith("face.")}
    # float32 whatever the export's dtype: the folded bias cancels the features' common part, which float16 rounds
    weights.update({f"face.{k}": v.float().contiguous() for k, v in face.state_dict().items()})
    fresh = [k for k in weights if ".branches.face." in k]
    for k in fresh:
        weights[k] = torch.zeros_like(weights[k])  # the branch starts at zero, as a new one does
    config["conditioners"]["face"] = face.config()
    metadata["config"] = json.dumps(config)
    save_safetensors(weights, args.out, metadata)  # atomic; the same content gives the same sha256
    print(f"wrote {args.out}: a fresh face conditioner ({args.feature_tokens} keys per face vector, standardised on "
          f"{len(features)} embeddings of {args.shards}) and {len(fresh)} zeroed face-branch tensors")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
