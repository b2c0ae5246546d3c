"""Reading weight files safely: safetensors headers and shards, torch pickles (``weights_only=True``), JSON.

Every failure to read a file (absent, truncated, corrupt, wrong format) becomes a one-line
:class:`~fantasytalking.errors.WeightsError` that names the file and says to re-download it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fantasytalking.errors import WeightsError

from .keys import format_names, natural_key

__all__ = [
    "as_state_dict",
    "config_model_type",
    "find_shards",
    "iter_safetensors_shards",
    "load_safetensors",
    "load_torch_file",
    "read_json",
    "read_safetensors_shapes",
    "read_shard_shapes",
    "read_sidecar_config",
    "save_safetensors",
    "sidecar_path",
]

_SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<k>\d+)-of-(?P<n>\d+)\.safetensors$")


def _broken(path: Path, err: BaseException) -> WeightsError:
    reason = " ".join(str(err).split()) or type(err).__name__
    if len(reason) > 120:  # torch's zip errors run to several sentences: keep the first
        reason = reason.split(". ")[0][:120]
    return WeightsError(f"cannot read weight file {path} ({reason}): it is truncated or corrupt; re-download it.")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes (hex), read in ``chunk``-byte pieces: which weights a record measured."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | Path) -> dict[str, Any]:
    """Parse a JSON object file, or raise :class:`WeightsError` naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"missing file {path}: download it into {path.parent}.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"cannot parse {path} ({err}): the file is corrupt; re-download it.") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path} does not hold a JSON object: the file is corrupt; re-download it.")
    return data


def config_model_type(folder: str | Path) -> str | None:
    """``model_type`` of ``folder/config.json`` (``None`` if the folder has no config)."""
    config = Path(folder) / "config.json"
    return read_json(config).get("model_type") if config.is_file() else None


def sidecar_path(path: str | Path) -> Path:
    """``<file>.config.json`` next to a config-less checkpoint (e.g. ``Wan2.1_VAE.pth.config.json``)."""
    path = Path(path)
    return path.with_name(path.name + ".config.json")


def read_sidecar_config(path: str | Path) -> dict[str, Any]:
    """Config overrides from the optional sidecar ``<file>.config.json`` (empty dict if there is none)."""
    side = sidecar_path(path)
    return read_json(side) if side.is_file() else {}


def read_safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape from a safetensors header, without reading tensor data.

    safetensors checks at open time that the data section covers every tensor, so a truncated file fails here.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"missing weight file {path}: download it into {path.parent}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as err:  # safetensors raises its own SafetensorError (and OSError)
        raise _broken(path, err) from None


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of one safetensors file on CPU, or :class:`WeightsError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"missing weight file {path}: download it into {path.parent}.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as err:
        raise _broken(path, err) from None


def load_torch_file(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True`` (no code execution), memory-mapped where the format allows.

    Legacy (pre-zip) pickles cannot be memory-mapped; they are read normally. Any failure (truncated zip,
    non-tensor objects refused by the safe unpickler, wrong format) is a :class:`WeightsError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"missing weight file {path}: download it into {path.parent}.")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap can only be used" not in str(err):
            raise _broken(path, err) from None
    except Exception as err:
        raise _broken(path, err) from None
    try:  # legacy format
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise _broken(path, err) from None


def as_state_dict(obj: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """``obj`` (as loaded from ``path``) as a flat ``{name: tensor}`` dict, or :class:`WeightsError`."""
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise WeightsError(
            f"{path} is not a flat state dict of tensors: it is not the expected weight file; re-download it."
        )
    return dict(obj)


def find_shards(folder: str | Path, stem: str = "diffusion_pytorch_model") -> list[Path]:
    """The safetensors files of a (possibly sharded) checkpoint ``<folder>/<stem>*.safetensors``.

    Uses ``<stem>.safetensors.index.json`` when present (every shard it names must exist); otherwise the
    ``<stem>-0000K-of-0000N.safetensors`` pattern (all N must exist); otherwise a single ``<stem>.safetensors``.
    """
    folder = Path(folder)
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise WeightsError(f"{index} has no weight_map: the file is corrupt; re-download it.")
        names = sorted(set(weight_map.values()), key=natural_key)
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise WeightsError(
                f"{folder} is missing shard(s) {format_names(missing)} listed in {index.name}: download them."
            )
        return [folder / n for n in names]

    shards = sorted(folder.glob(f"{stem}-*-of-*.safetensors"), key=lambda p: natural_key(p.name))
    if shards:
        m = _SHARD_RE.match(shards[0].name)
        total = int(m["n"]) if m else len(shards)
        width = len(m["k"]) if m else 5
        want = [f"{stem}-{k:0{width}d}-of-{total:0{width}d}.safetensors" for k in range(1, total + 1)]
        missing = [n for n in want if not (folder / n).is_file()]
        if missing:
            raise WeightsError(f"{folder} is missing shard(s) {format_names(missing)}: download them.")
        return [folder / n for n in want]

    single = folder / f"{stem}.safetensors"
    if single.is_file():
        return [single]
    raise WeightsError(
        f"no {stem}*.safetensors weights in {folder}: download the model's {stem}-*.safetensors files into it."
    )


def read_shard_shapes(files: list[Path]) -> tuple[dict[str, tuple[int, ...]], dict[str, Path]]:
    """Key -> shape and key -> file over all shards (headers only). A key in two shards is an error."""
    shapes: dict[str, tuple[int, ...]] = {}
    where: dict[str, Path] = {}
    for path in files:
        for key, shape in read_safetensors_shapes(path).items():
            if key in where:
                raise WeightsError(
                    f"tensor {key} is in both {where[key].name} and {path.name} in {path.parent}: "
                    "the shards come from different downloads; re-download the folder."
                )
            shapes[key] = shape
            where[key] = path
    index = _index_for(files)
    if index is not None:
        weight_map: Mapping[str, str] = read_json(index).get("weight_map", {})
        wrong = sorted(
            (k for k in set(weight_map) | set(where) if weight_map.get(k) != getattr(where.get(k), "name", None)),
            key=natural_key,
        )
        if wrong:
            raise WeightsError(
                f"{index} and the shards disagree about {len(wrong)} tensor(s) ({format_names(wrong)}): "
                "a shard is stale or from another model; re-download the folder."
            )
    return shapes, where


def _index_for(files: list[Path]) -> Path | None:
    if not files:
        return None
    m = _SHARD_RE.match(files[0].name)
    stem = m["stem"] if m else files[0].name.removesuffix(".safetensors")
    index = files[0].parent / f"{stem}.safetensors.index.json"
    return index if index.is_file() else None


def iter_safetensors_shards(files: list[Path]) -> Iterator[tuple[Path, dict[str, torch.Tensor]]]:
    """Yield ``(file, tensors)`` one shard at a time (the caller drops each before the next is read)."""
    for path in files:
        yield path, load_safetensors(path)


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` to ``path`` (.safetensors) atomically and reproducibly: the same tensors and metadata
    give the same bytes, so a file's sha256 names its content.

    safetensors' writer orders the tensors (by dtype, then name) but emits ``__metadata__`` in hash-map order,
    which differs from one process to the next; the header is rewritten here with the metadata keys sorted (a
    valid header: compact JSON padded with spaces to 8 bytes, the data untouched). The file is written beside
    ``path`` and renamed over it, so a reader never sees half a file and memory-mapped sources stay intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata) if metadata is not None else None)
        _sort_metadata(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _sort_metadata(path: Path) -> None:
    """Rewrite a safetensors file's header with ``__metadata__``'s keys sorted (in place when the length holds)."""
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
    if "__metadata__" not in header:
        return
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the format's alignment of the data
    if len(text) == size:  # the usual case: the same escapes, only the order differs
        with open(path, "r+b") as handle:
            handle.seek(8)
            handle.write(text)
        return
    rewritten = path.with_name(path.name + ".header")
    try:
        with open(path, "rb") as source, open(rewritten, "wb") as target:
            source.seek(8 + size)
            target.write(len(text).to_bytes(8, "little") + text)
            shutil.copyfileobj(source, target)
        os.replace(rewritten, path)
    finally:
        rewritten.unlink(missing_ok=True)
