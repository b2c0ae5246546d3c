"""Re-embed the reference faces of a shard folder with another face encoder (``fantasytalking reembed``).

Preprocessing (and ``fantasytalking synth``) store one identity vector per clip, ``face_embedding.npy``: the face
encoder's vector of the clip's first frame with its landmarks. A face conditioner is trained on the vectors of ONE
encoder and embeds references at inference with the same one (its ``encoder_spec``), so trying another encoder
(``"head"``, ``"dlib+head"``, an ArcFace file) needs the shards' vectors made by it. This copies a shard folder
with only that member recomputed, from the first decoded frame of ``video.mp4`` and ``landmarks.npy[0]`` (the
frame and landmarks preprocessing embeds), and ``meta.json``'s ``face_encoder`` / ``embedding_dim`` updated. Every
other member keeps its bytes, its order and its tar header's time, so the videos (and an encode cache keyed on
them) are the same.

The copy is written into a hidden folder beside ``out`` and renamed at the end: ``out`` appears whole or not at
all. A sample without a video, landmarks or face embedding, or one whose face cannot be embedded, stops the run
with its key (nothing is skipped).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fantasytalking.data import format as fmt
from fantasytalking.errors import FantasyTalkingError, InputError

__all__ = ["REEMBED_RECORD", "add_reembed_arguments", "reembed_faces", "reembed_from_args"]

#: Written into the copy: the source folder, the encoder spec and the number of clips.
REEMBED_RECORD = "reembed.json"
#: Settings files of a shard folder that name the face encoder (preprocessing's and SynthTalk's).
_SETTINGS_FILES = (fmt.SETTINGS, "synthtalk.json")


def _samples(tar: tarfile.TarFile, shard: Path) -> Iterator[tuple[str, list[tuple[tarfile.TarInfo, bytes]]]]:
    """The shard's samples in their order, one at a time: ``(key, [(header, bytes), ...])`` (a sample's members
    lie together, as WebDataset reads them; a key met again after another is a corrupt shard)."""
    key: str | None = None
    members: list[tuple[tarfile.TarInfo, bytes]] = []
    seen: set[str] = set()
    for info in tar:
        if not info.isfile():
            continue
        name, sep, _suffix = info.name.partition(".")
        if not sep:
            raise InputError(f"{shard}: member {info.name!r} is not KEY.SUFFIX; is this a fantasytalking shard?")
        handle = tar.extractfile(info)
        if handle is None:
            raise InputError(f"{shard}: cannot read member {info.name!r}; the shard is corrupt, rewrite it.")
        if name != key:
            if key is not None:
                yield key, members
            if name in seen:
                raise InputError(f"{shard}: the members of sample {name} are not together; rewrite the shard.")
            seen.add(name)
            key, members = name, []
        members.append((info, handle.read()))
    if key is not None:
        yield key, members


def _checked(samples: Iterator[Any], shard: Path) -> Iterator[Any]:
    """``samples`` with a tar error met while reading (a truncated or corrupt shard) said in one line."""
    try:
        yield from samples
    except (tarfile.TarError, OSError, EOFError) as err:
        raise InputError(f"cannot read {shard} ({err or type(err).__name__}); the shard is corrupt, rewrite it.") from None


def _suffix(info: tarfile.TarInfo) -> str:
    return info.name.partition(".")[2]


def reembed_faces(
    shards: str | os.PathLike[str],
    out: str | os.PathLike[str],
    encoder_spec: str,
    *,
    encoder: Any | None = None,
) -> dict[str, Any]:
    """Copy the shard folder ``shards`` to ``out`` with every ``face_embedding.npy`` made by ``encoder_spec``.

    Args:
        shards: a folder of ``shard-*.tar`` (preprocessing's or SynthTalk's output).
        out: the new folder; must not exist.
        encoder_spec: the face encoder, as :func:`fantasytalking.face.make_face_encoder` reads it (``"dlib"``,
            ``"head"``, ``"dlib+head"``, ``"arcface:PATH"``); recorded in the copy's settings.
        encoder: a ready encoder for that spec (default: built from it).

    Returns:
        the record written to ``out/reembed.json``: source, spec, encoder name, ``embedding_dim``, clips.
    """
    src, dst = Path(shards), Path(out)
    tars = sorted(src.glob(fmt.SHARD_GLOB)) if src.is_dir() else []
    if not tars:
        raise InputError(f"{src} holds no {fmt.SHARD_GLOB}; give a folder written by preprocess or synth.")
    if dst.exists():
        raise InputError(f"{dst} exists; choose another --out or remove it.")
    if encoder is None:
        from fantasytalking.face import make_face_encoder

        encoder = make_face_encoder(encoder_spec)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    count = 0
    try:
        for shard in tars:
            try:
                reader = tarfile.open(shard, "r")  # noqa: SIM115 (closed below)
            except (tarfile.TarError, OSError) as err:
                raise InputError(f"cannot read {shard} ({err}); the shard is corrupt, rewrite it.") from None
            with reader, tarfile.open(tmp / shard.name, "w", format=tarfile.USTAR_FORMAT) as writer:
                for key, members in _checked(_samples(reader, shard), shard):
                    by_suffix = {_suffix(info): data for info, data in members}
                    lacking = [m for m in (fmt.VIDEO, fmt.LANDMARKS, fmt.FACE_EMBEDDING) if m not in by_suffix]
                    if lacking:
                        raise InputError(f"{shard}: sample {key} has no {lacking[0]}; rewrite the shard with preprocess.")
                    try:
                        frame0 = fmt.decode_mp4(by_suffix[fmt.VIDEO])[0]  # (H, W, 3) uint8
                        landmarks0 = fmt.from_npy(by_suffix[fmt.LANDMARKS])[0]  # (68, 2)
                        vector = np.asarray(encoder.encode(frame0, landmarks0), dtype=np.float32).reshape(-1)  # (E,)
                    except FantasyTalkingError as err:
                        raise InputError(f"{shard}: sample {key}: {err}") from None
                    except Exception as err:  # an undecodable video or landmarks file
                        raise InputError(f"{shard}: sample {key} cannot be read ({type(err).__name__}: {err}); "
                                         "rewrite the shard with preprocess.") from None  # fmt: skip
                    if not np.isfinite(vector).all():
                        raise InputError(f"{shard}: sample {key}: the face encoder gave a non-finite vector.")
                    for info, data in members:
                        suffix = _suffix(info)
                        if suffix == fmt.FACE_EMBEDDING:
                            data = fmt.to_npy(vector)
                        elif suffix == fmt.META:
                            meta = json.loads(data)
                            meta["face_encoder"] = getattr(encoder, "name", encoder_spec)
                            meta["embedding_dim"] = int(vector.shape[0])
                            data = json.dumps(meta, ensure_ascii=False).encode("utf-8")
                        header = tarfile.TarInfo(info.name)
                        header.size, header.mtime, header.mode = len(data), info.mtime, info.mode
                        writer.addfile(header, io.BytesIO(data))
                    count += 1
        for side in sorted(p for p in src.iterdir() if p.is_file() and not p.name.endswith(".tar")):
            if side.name in _SETTINGS_FILES:
                settings = json.loads(side.read_text())
                if "face_encoder" in settings:
                    settings["face_encoder"] = encoder_spec
                (tmp / side.name).write_text(json.dumps(settings, indent=2) + "\n")
            elif not side.name.startswith("."):
                shutil.copy2(side, tmp / side.name)
        record = {"source": str(src), "face_encoder": encoder_spec, "encoder_name": getattr(encoder, "name", encoder_spec),
                  "embedding_dim": int(getattr(encoder, "dim", 0)) or None, "clips": count}  # fmt: skip
        (tmp / REEMBED_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    return record


def add_reembed_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``reembed`` options to ``parser``."""
    parser.add_argument("shards", type=Path, help="a shard folder written by preprocess or synth")
    parser.add_argument("--out", type=Path, required=True, help="the new shard folder (must not exist)")
    parser.add_argument("--face-encoder", required=True,
                        help="'dlib', 'head' (or 'head:GRID'), 'arcface:/path/model.pt', or several joined by '+', "
                        "e.g. 'dlib+head'; train the face conditioner with the same encoder_spec")  # fmt: skip
    return parser


def reembed_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return reembed_faces(args.shards, args.out, args.face_encoder)
