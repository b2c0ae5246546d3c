"""A cache of the frozen encodes of a training clip (VAE latents, I2V condition ``y``, CLIP tokens).

On a small dataset trained for several epochs on a slow device, the frozen VAE encodes of every batch
(the clip's latents and the first-frame condition, both through the causal 3D VAE) cost as much as the
DiT step itself (demo preset on 2 CPU cores: ~1.9 s of a ~3.3 s batch-4 step). They are deterministic
(posterior mode; the first frame alone gives ``y`` and the CLIP tokens), so each clip needs them once.

Entries are keyed by the SHA-1 of the clip's pixels (``float32`` bytes of ``(3, N, H, W)``) and of the
encoder's identity, so a different temporal window, a different resolution or a different VAE never
hits a stale entry. With ``directory`` set, entries are also written there (one ``.pt`` per clip,
written atomically), so the second stage (another process) and later runs reuse them.

Memory: the demo preset (96 px, 17 frames) takes ~110 KB a clip (latents 16x5x12x12 + y 20x5x12x12 +
CLIP tokens, fp32): ~180 MB for 1,600 clips.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch

__all__ = ["EncodeCache", "clip_digest"]


def clip_digest(video: torch.Tensor, salt: str = "") -> str:
    """SHA-1 of one clip ``(3, N, H, W)`` (its float32 bytes, shape included) and ``salt``."""
    h = hashlib.sha1(salt.encode())
    h.update(repr(tuple(video.shape)).encode())
    h.update(video.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


class EncodeCache:
    """Per-clip frozen encodes, in memory and optionally on disk.

    Args:
        directory: folder for the ``.pt`` entries (created); None keeps them in memory only.
        salt: identifies the encoders (e.g. the VAE path and its latent statistics): part of every key.
    """

    def __init__(self, directory: str | Path | None = None, salt: str = "") -> None:
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.salt = salt
        self._memory: dict[str, dict[str, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._memory)

    def key(self, video: torch.Tensor) -> str:
        return clip_digest(video, self.salt)

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        entry = self._memory.get(key)
        if entry is None and self.directory is not None:
            path = self.directory / f"{key}.pt"
            if path.is_file():
                try:
                    entry = torch.load(path, map_location="cpu", weights_only=True)
                except Exception:  # a damaged entry is recomputed (and rewritten), never trusted
                    entry = None
                if entry is not None:
                    self._memory[key] = entry
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, key: str, entry: dict[str, torch.Tensor]) -> None:
        entry = {k: v.detach().to("cpu").contiguous() for k, v in entry.items()}
        self._memory[key] = entry
        if self.directory is not None:
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            os.close(fd)
            try:
                torch.save(entry, tmp)
                os.replace(tmp, self.directory / f"{key}.pt")
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
