"""Where metric networks find their weights: a path the user gives, the torch hub cache, or a download.

Every metric that needs a downloaded network names, in one line, the file to fetch, where from, and which
argument / CLI flag takes it (:func:`resolve_weights`), before any video is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from fantasytalking.errors import WeightsError

__all__ = ["KNOWN_WEIGHTS", "WeightFile", "cached_path", "resolve_weights"]


@dataclass(frozen=True)
class WeightFile:
    """A public weight file: its name in the torch hub cache, its address, and the argument / flag that takes it."""

    filename: str
    url: str
    argument: str
    flag: str


KNOWN_WEIGHTS: dict[str, WeightFile] = {
    "inception": WeightFile(
        "pt_inception-2015-12-05-6726825d.pth",
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
        "FID(inception_weights=...)",
        "--inception",
    ),
    "i3d": WeightFile(
        "i3d_torchscript.pt",
        "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
        "FVD(i3d_weights=...)",
        "--i3d",
    ),
    "syncnet": WeightFile(
        "syncnet_v2.model",
        "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",
        "SyncNetScore(syncnet_weights=...)",
        "--syncnet",
    ),
    "alexnet": WeightFile(
        "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "LPIPSVideo(backbone_weights=...)",
        "--lpips-backbone",
    ),
}


def cached_path(key: str) -> Path:
    """Where the torch hub cache keeps ``KNOWN_WEIGHTS[key]`` (``$TORCH_HOME/hub/checkpoints/<file>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / KNOWN_WEIGHTS[key].filename


def _message(key: str, why: str) -> str:
    w = KNOWN_WEIGHTS[key]
    return (
        f"{why}: download {w.filename} from {w.url} and pass its path with {w.flag} (library: {w.argument}), "
        f"or put it at {cached_path(key)}"
    )


def resolve_weights(key: str, path: str | os.PathLike[str] | None, *, download: bool = False) -> Path:
    """The local weight file for ``key``: ``path`` if given, else the hub cache, else a download if allowed.

    Raises:
        WeightsError: one line naming the file, its address and where to put it.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsError(_message(key, f"weight file not found: {p}"))
        return p
    cached = cached_path(key)
    if cached.is_file():
        return cached
    if not download:
        raise WeightsError(_message(key, f"no {KNOWN_WEIGHTS[key].filename} given or cached"))
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(KNOWN_WEIGHTS[key].url, str(cached), progress=True)
    except Exception as err:  # any network failure: say what to fetch by hand
        raise WeightsError(_message(key, f"could not download {KNOWN_WEIGHTS[key].filename} ({err})")) from err
    return cached
