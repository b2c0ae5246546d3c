"""DDP with two CPU processes (gloo): a few steps of the tiny preset, identical weights on both ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("training_ddp_worker.py")


def test_ddp_two_cpu_ranks_end_with_identical_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(WORKER), str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(r["world_size"] == 2 and len(r["losses"]) == 3 for r in ranks)
    assert ranks[0]["losses"] != ranks[1]["losses"]  # each rank trained on its own samples ...
    weights = [r["weights"] for r in ranks]
    assert weights[0].keys() == weights[1].keys() == ranks[0]["start"].keys()
    for name, value in weights[0].items():  # ... and the averaged gradients kept them in step
        assert torch.equal(value, weights[1][name]), name
    trained = "transformer.transformer.blocks.0.attn2.processor.branches.face.v_proj.weight"
    assert not torch.equal(weights[0][trained], ranks[0]["start"][trained])
