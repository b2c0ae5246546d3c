"""Finding the three weight sets: one folder holding them, explicit paths, or Hugging Face Hub names.

A weights folder is expected to look like the authors' instructions::

    WEIGHTS/
      Wan2.1-I2V-14B-720P/            (or Wan2.1-I2V-14B-720P-Diffusers/; any folder name with the right files)
      wav2vec2-base-960h/
      fantasytalking_model.ckpt       (or fantasytalking_model.safetensors)

Folder and file names match case-insensitively. Hub names (``Wan-AI/Wan2.1-I2V-14B-720P``,
``Wan-AI/Wan2.1-I2V-14B-720P-Diffusers``, ``facebook/wav2vec2-base-960h``, ``acvlab/FantasyTalking``) are
downloaded with ``huggingface_hub`` when ``local_files_only=False``, and otherwise looked up in the local Hub
cache only; a miss is a :class:`WeightsError` naming the files to fetch and where to put them.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from fantasytalking.errors import WeightsError

from .files import find_shards, read_json
from .keys import format_names
from .wan import WAN_CLIP_FILE, WAN_T5_FILE, WAN_TOKENIZER_DIR, WAN_VAE_FILE, WanLayout

__all__ = [
    "FANTASYTALKING_FILES",
    "HUB_FANTASYTALKING",
    "HUB_WAN",
    "HUB_WAN_DIFFUSERS",
    "HUB_WAV2VEC",
    "WeightPaths",
    "find_fantasytalking_file",
    "resolve_weights",
    "wan_files",
    "wav2vec_files",
]

HUB_WAN = "Wan-AI/Wan2.1-I2V-14B-720P"
HUB_WAN_DIFFUSERS = "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"
HUB_WAV2VEC = "facebook/wav2vec2-base-960h"
HUB_FANTASYTALKING = "acvlab/FantasyTalking"

WAN_DIR = "Wan2.1-I2V-14B-720P"
WAN_DIFFUSERS_DIR = "Wan2.1-I2V-14B-720P-Diffusers"
WAV2VEC_DIR = "wav2vec2-base-960h"
FANTASYTALKING_FILES = ("fantasytalking_model.ckpt", "fantasytalking_model.safetensors")

# What each download needs (for messages and for snapshot_download's allow_patterns).
_WAN_ORIGINAL_LIST = (
    f"config.json, diffusion_pytorch_model-0000{{1..7}}-of-00007.safetensors (+ .index.json), {WAN_VAE_FILE}, "
    f"{WAN_T5_FILE}, {WAN_CLIP_FILE}, {WAN_TOKENIZER_DIR}/"
)
_WAN_DIFFUSERS_LIST = (
    "model_index.json, transformer/, vae/, text_encoder/, tokenizer/, image_encoder/, image_processor/"
)
_WAV2VEC_LIST = "config.json, preprocessor_config.json, model.safetensors (or pytorch_model.bin)"
_ALLOW = {
    HUB_WAN: ["config.json", "diffusion_pytorch_model*", WAN_VAE_FILE, WAN_T5_FILE, WAN_CLIP_FILE,
              f"{WAN_TOKENIZER_DIR}/*"],
    HUB_WAN_DIFFUSERS: ["model_index.json", "transformer/*", "vae/*", "text_encoder/*", "tokenizer/*",
                        "image_encoder/*", "image_processor/*", "scheduler/*"],
    HUB_WAV2VEC: ["config.json", "preprocessor_config.json", "*.safetensors", "pytorch_model.bin", "vocab.json",
                  "tokenizer_config.json", "special_tokens_map.json"],
}  # fmt: skip
_HUB_NAME_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclasses.dataclass(frozen=True)
class WeightPaths:
    """Where each weight set was found.

    ``wan``: the Wan2.1 folder, in ``wan_layout`` ("original" or "diffusers"); ``wav2vec``: a wav2vec2 folder;
    ``fantasytalking``: the audio-weights file; ``files``: every file the three sets consist of.
    """

    wan: Path
    wan_layout: WanLayout
    wav2vec: Path
    fantasytalking: Path
    files: list[Path] = dataclasses.field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# Completeness checks: the list of files of a folder, or WeightsError naming the first missing one.
# ----------------------------------------------------------------------------------------------------------------


def _missing(folder: Path, name: str, source: str) -> WeightsError:
    return WeightsError(f"{folder} is missing {name}: download it from {source} into that folder.")


def _need(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    if not path.exists():
        raise _missing(folder, name, source)
    return path


def _dir_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def wan_files(folder: Path) -> tuple[WanLayout, list[Path]]:
    """Layout and files of a complete Wan2.1 I2V folder, or :class:`WeightsError` naming what is missing."""
    if (folder / "model_index.json").is_file() or (folder / "transformer").is_dir():
        files = [_need(folder, "model_index.json", HUB_WAN_DIFFUSERS)]
        for sub in ("transformer", "vae"):
            _need(folder, f"{sub}/config.json", HUB_WAN_DIFFUSERS)
            files += [folder / sub / "config.json", *find_shards(folder / sub, "diffusion_pytorch_model")]
        for sub in ("text_encoder", "image_encoder"):
            _need(folder, f"{sub}/config.json", HUB_WAN_DIFFUSERS)
            files += [folder / sub / "config.json", *find_shards(folder / sub, "model")]
        for sub in ("tokenizer", "image_processor"):
            if not (folder / sub).is_dir() or not any((folder / sub).iterdir()):
                raise _missing(folder, f"{sub}/", HUB_WAN_DIFFUSERS)
            files += _dir_files(folder / sub)
        if (folder / "scheduler").is_dir():
            files += _dir_files(folder / "scheduler")
        return "diffusers", files

    files = [_need(folder, "config.json", HUB_WAN)]
    config = read_json(files[0])
    if "dim" not in config or "num_layers" not in config:
        raise WeightsError(
            f"{folder} is not a Wan2.1 folder ({files[0].name} describes {config.get('model_type', 'another model')!r}, "
            f"not Wan's DiT): point to the {WAN_DIR} download ({HUB_WAN})."
        )
    files += find_shards(folder, "diffusion_pytorch_model")
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        files.append(index)
    for name in (WAN_VAE_FILE, WAN_T5_FILE, WAN_CLIP_FILE):
        files.append(_need(folder, name, HUB_WAN))
    tokenizer = _need(folder, WAN_TOKENIZER_DIR, HUB_WAN)
    if not any(tokenizer.iterdir()):
        raise _missing(folder, f"{WAN_TOKENIZER_DIR}/ (tokenizer files)", HUB_WAN)
    files += _dir_files(tokenizer)
    files += [p for p in folder.glob("*.config.json") if p.is_file()]  # optional sidecar configs
    return "original", files


def wav2vec_files(folder: Path) -> list[Path]:
    """Files of a complete wav2vec2 folder, or :class:`WeightsError` naming what is missing."""
    files = [_need(folder, "config.json", HUB_WAV2VEC), _need(folder, "preprocessor_config.json", HUB_WAV2VEC)]
    if (folder / "model.safetensors").is_file() or any(folder.glob("model-*-of-*.safetensors")):
        files += find_shards(folder, "model")
    elif (folder / "pytorch_model.bin").is_file():
        files.append(folder / "pytorch_model.bin")
    else:
        raise _missing(folder, "model.safetensors (or pytorch_model.bin)", HUB_WAV2VEC)
    return files


def find_fantasytalking_file(folder: Path) -> Path | None:
    """``fantasytalking_model.ckpt`` / ``.safetensors`` (any case) in ``folder`` or one level below."""
    for where in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        by_name = {p.name.lower(): p for p in where.iterdir() if p.is_file()}
        for name in FANTASYTALKING_FILES:
            if name in by_name:
                return by_name[name]
    return None


# ----------------------------------------------------------------------------------------------------------------
# Finding the folders inside a weights folder
# ----------------------------------------------------------------------------------------------------------------


def _looks_like_wan(folder: Path) -> bool:
    if (folder / "model_index.json").is_file() or (folder / WAN_VAE_FILE).is_file() or (folder / WAN_T5_FILE).is_file():
        return True
    config = folder / "config.json"
    if config.is_file():
        try:
            data = read_json(config)
        except WeightsError:
            return False
        return "model_type" in data and "dim" in data
    return any(folder.glob("diffusion_pytorch_model*.safetensors"))


def _looks_like_wav2vec(folder: Path) -> bool:
    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        return str(read_json(config).get("model_type", "")).lower() == "wav2vec2"
    except WeightsError:
        return False


def _pick(weights: Path, names: tuple[str, ...], looks_like) -> Path | None:
    """A subfolder by known name (case-insensitive, in order of preference), else any that looks right."""
    subdirs = sorted(p for p in weights.iterdir() if p.is_dir())
    by_name = {p.name.lower(): p for p in subdirs}
    for name in names:
        if name.lower() in by_name:
            return by_name[name.lower()]
    return next((p for p in subdirs if looks_like(p)), None)


# ----------------------------------------------------------------------------------------------------------------
# Hub
# ----------------------------------------------------------------------------------------------------------------


def _is_hub_name(value: str | Path) -> bool:
    return isinstance(value, str) and bool(_HUB_NAME_RE.match(value)) and not Path(value).exists()


def _hub_fetch(repo: str, *, local_files_only: bool, what: str, files: str, local_dir_name: str,
               filename: str | None = None) -> Path:  # fmt: skip
    """Download (or find in the local Hub cache) a repo snapshot or one file."""
    import huggingface_hub

    try:
        if filename is not None:
            return Path(huggingface_hub.hf_hub_download(repo, filename, local_files_only=local_files_only))
        return Path(
            huggingface_hub.snapshot_download(repo, allow_patterns=_ALLOW.get(repo), local_files_only=local_files_only)
        )
    except Exception as err:
        how = (
            "downloads are off (local_files_only)"
            if local_files_only
            else f"the download failed ({type(err).__name__})"
        )
        raise WeightsError(
            f"{what} ({repo}) is not available and {how}: fetch {files} with `hf download {repo} --local-dir "
            f"WEIGHTS/{local_dir_name}` (WEIGHTS = your weights folder) and pass that folder, or allow downloads."
        ) from None


def _resolve_wan(value: str | Path | None, local_files_only: bool) -> Path:
    value = value or HUB_WAN
    if _is_hub_name(value):
        diffusers = str(value).lower().endswith("-diffusers")
        return _hub_fetch(
            str(value), local_files_only=local_files_only, what="Wan2.1-I2V-14B-720P",
            files=_WAN_DIFFUSERS_LIST if diffusers else _WAN_ORIGINAL_LIST,
            local_dir_name=WAN_DIFFUSERS_DIR if diffusers else WAN_DIR,
        )  # fmt: skip
    path = Path(value)
    if not path.is_dir():
        raise WeightsError(f"Wan2.1 folder {path} does not exist: download {HUB_WAN} into it ({_WAN_ORIGINAL_LIST}).")
    return path


def _resolve_wav2vec(value: str | Path | None, local_files_only: bool) -> Path:
    value = value or HUB_WAV2VEC
    if _is_hub_name(value):
        return _hub_fetch(str(value), local_files_only=local_files_only, what="wav2vec2-base-960h",
                          files=_WAV2VEC_LIST, local_dir_name=WAV2VEC_DIR)  # fmt: skip
    path = Path(value)
    if not path.is_dir():
        raise WeightsError(f"wav2vec2 folder {path} does not exist: download {HUB_WAV2VEC} into it ({_WAV2VEC_LIST}).")
    return path


def _resolve_fantasytalking(value: str | Path | None, local_files_only: bool) -> Path:
    value = value or HUB_FANTASYTALKING
    if _is_hub_name(value):
        return _hub_fetch(str(value), local_files_only=local_files_only, what="FantasyTalking audio weights",
                          files=FANTASYTALKING_FILES[0], local_dir_name="", filename=FANTASYTALKING_FILES[0])  # fmt: skip
    path = Path(value)
    if path.is_dir():
        found = find_fantasytalking_file(path)
        if found is None:
            raise _missing(path, FANTASYTALKING_FILES[0], HUB_FANTASYTALKING)
        return found
    if not path.is_file():
        raise WeightsError(f"FantasyTalking weights file {path} does not exist: download it from {HUB_FANTASYTALKING}.")
    return path


# ----------------------------------------------------------------------------------------------------------------


def resolve_weights(
    weights: str | Path | None = None,
    *,
    wan: str | Path | None = None,
    wav2vec: str | Path | None = None,
    fantasytalking: str | Path | None = None,
    local_files_only: bool = True,
) -> WeightPaths:
    """Locate and check the three weight sets (files must all be present; contents are checked on load).

    ``weights`` is a folder holding all three (see the module docstring); ``wan`` / ``wav2vec`` /
    ``fantasytalking`` are explicit folders, files or Hub names that take precedence over it. A set given
    neither way defaults to its Hub name.
    """
    if weights is not None:
        root = Path(weights)
        if not root.is_dir():
            raise WeightsError(f"weights folder {root} does not exist: create it and download the weights into it.")
        if wan is None:
            wan = _pick(root, (WAN_DIR, WAN_DIFFUSERS_DIR), _looks_like_wan)
            if wan is None:
                raise WeightsError(
                    f"no {WAN_DIR} folder in {root}: download {HUB_WAN} into {root / WAN_DIR} ({_WAN_ORIGINAL_LIST})."
                )
        if wav2vec is None:
            wav2vec = _pick(root, (WAV2VEC_DIR,), _looks_like_wav2vec)
            if wav2vec is None:
                raise WeightsError(
                    f"no {WAV2VEC_DIR} folder in {root}: download {HUB_WAV2VEC} into {root / WAV2VEC_DIR} "
                    f"({_WAV2VEC_LIST})."
                )
        if fantasytalking is None:
            fantasytalking = find_fantasytalking_file(root)
            if fantasytalking is None:
                raise _missing(root, FANTASYTALKING_FILES[0], HUB_FANTASYTALKING)

    wan_path = _resolve_wan(wan, local_files_only)
    layout, wan_list = wan_files(wan_path)
    wav2vec_path = _resolve_wav2vec(wav2vec, local_files_only)
    ft_path = _resolve_fantasytalking(fantasytalking, local_files_only)
    files = [*wan_list, *wav2vec_files(wav2vec_path), ft_path]
    dupes = sorted({str(p) for p in files if files.count(p) > 1})
    if dupes:
        raise WeightsError(
            f"the same file serves two weight sets ({format_names(dupes)}): point each at its own folder."
        )
    return WeightPaths(wan=wan_path, wan_layout=layout, wav2vec=wav2vec_path, fantasytalking=ft_path, files=files)
