"""States synchronise across processes: 2 CPU ranks (gloo) give the single-process result on the union."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from fantasytalking.metrics import FID, LandmarkLipSync


class MeanColour(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 3, 8, 8, generator=g), torch.rand(4, 3, 3, 8, 8, generator=g) * 0.7


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        real, fake = _data()
        fid = FID(feature_extractor=MeanColour(), num_features=3)
        fid.update(real[rank::world], real=True)
        fid.update(fake[rank::world], real=False)
        value = fid.compute()  # syncs the summed states
        lip = LandmarkLipSync(landmarker=object())
        lip.corr_sum += float(rank + 1)
        lip.count += 1
        torch.save({"fid": value, "lip": lip.compute()["lipsync_corr"]}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_process_sync_equals_union(tmp_path) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    out = str(tmp_path / "res")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    real, fake = _data()
    single = FID(feature_extractor=MeanColour(), num_features=3)
    single.update(real, real=True)
    single.update(fake, real=False)
    expected = float(single.compute())
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        assert float(got["fid"]) == pytest.approx(expected, rel=1e-9)
        assert float(got["lip"]) == pytest.approx(1.5)  # (1 + 2) / 2 videos
