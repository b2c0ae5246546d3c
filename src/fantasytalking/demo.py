"""The embedded default: the trained ``demo`` model, shipped inside the package, and its bundled inputs.

The demo model is FantasyTalking's architecture at a size that trains on a CPU (``training/presets.py``),
trained with the project's two stages on SynthTalk (``docs/demo.md`` has the command, seed, data, wall
time and loss curves). It knows SynthTalk's drawn faces only: on a photo it runs, but what it draws is
not a talking version of that photo, and :func:`domain_note` says so.

Files (``fantasytalking/assets/demo/``)::

    model.safetensors   transformer + audio / face / motion conditioners (examples/finetune.py export)
    vae/                the demo's AutoencoderKLWan (save_pretrained, with its latent statistics)
    card.json           how it was trained: command, seed, data, wall time, clip length, held-out scores
    portrait.png        a held-out SynthTalk identity (never seen in training)
    speech.wav          a held-out SynthTalk sentence and voice, about 4 s

Example::

    from fantasytalking.demo import demo_inputs, load_demo
    pipe = load_demo()
    image, audio = demo_inputs()
    pipe.save(pipe(image, audio, **pipe.demo_defaults), "demo.mp4")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fantasytalking.errors import InputError, WeightsError

__all__ = ["DEMO_DIR", "DemoFolder", "card_int", "check_demo_folder", "demo_card", "demo_inputs", "domain_note", "flat_colour_fraction",
           "load_demo", "make_demo_inputs"]

#: Where the embedded default lives (inside the installed package).
DEMO_DIR = Path(__file__).resolve().parent / "assets" / "demo"

#: Generation settings the demo was evaluated with (``docs/demo.md``); any can be overridden. ``segment_frames`` 0:
#: the whole speech as ONE clip, although the model was trained on 17-frame clips: on held-out clips one clip of 81
#: or 161 frames kept lip sync and identity, and consecutive 17-frame segments lost both (docs/design.md).
DEMO_GENERATION: dict[str, Any] = {"num_inference_steps": 20, "max_edge": 96, "fps": 23, "max_frames": 121,
                                   "prompt_cfg": 1.0, "audio_cfg": 2.0, "segment_frames": 0}  # fmt: skip

#: Share of pixels in flat 3x3 neighbourhoods above which an image is taken for a drawn (SynthTalk-like) face.
FLAT_THRESHOLD = 0.5


def _folder(directory: str | Path | None) -> Path:
    """The demo model folder: ``directory``, or the packaged one; a given one must be a folder."""
    if not directory:  # None (or ""): as ``Path(directory or DEMO_DIR)`` always read it
        return DEMO_DIR
    root = Path(directory)
    if not root.is_dir():
        raise WeightsError(f"the demo model folder {root} does not exist or is not a folder; give --demo-dir a folder "
                           "packaged as docs/demo.md says (model.safetensors, vae/, card.json).")  # fmt: skip
    return root


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise WeightsError(
            f"the demo model folder lacks {path.name} ({what}) at {path}; train and package it "
            "(bash examples/train_demo.sh && python examples/package_demo.py, docs/demo.md) or give --demo-dir."
        )
    return path


def demo_card(directory: str | Path | None = None) -> dict[str, Any]:
    """The demo's ``card.json``: training command, seed, data, wall time, clip length, held-out scores."""
    path = _need(_folder(directory) / "card.json", "its training card")
    try:
        card = json.loads(path.read_text())
    except ValueError as err:
        raise WeightsError(f"{path} is not valid JSON ({err}); reinstall fantasytalking.") from None
    if not isinstance(card, dict):
        raise WeightsError(f"{path} is not a demo model card (a JSON object); reinstall fantasytalking.")
    return card


def card_int(card: dict[str, Any], key: str, path: Path, why: str, *, minimum: int | None = None) -> int:
    """The integer ``card[key]`` (at least ``minimum``), or a :class:`WeightsError` naming ``path``, the key, what
    was found and ``why`` the card needs it."""
    value = card.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        kind = "integer" if minimum is None else f"integer >= {minimum}"
        raise WeightsError(f"{path} has no {kind} {key!r} (got {value!r}); {why}; reinstall fantasytalking or "
                           "re-package the demo (docs/demo.md).")  # fmt: skip
    return value


def _card_generation(card: dict[str, Any], path: Path) -> dict[str, Any]:
    generation = card.get("generation", {})
    allowed = {*DEMO_GENERATION, "motion_gain"}
    if not isinstance(generation, dict) or not set(generation) <= allowed:
        unknown = sorted(set(generation) - allowed) if isinstance(generation, dict) else generation
        raise WeightsError(f"{path}: 'generation' holds unknown settings {unknown!r}; allowed: {sorted(allowed)}; "
                           "reinstall fantasytalking.")  # fmt: skip
    return generation


def demo_inputs(directory: str | Path | None = None, *, image: bool = True, audio: bool = True
                ) -> tuple[Path, Path]:  # fmt: skip
    """The bundled SynthTalk portrait and speech (both held out from training).

    ``image`` / ``audio`` False: that file is not needed (the caller has its own), so a folder without it is no
    error; its path is returned all the same.
    """
    root = _folder(directory)
    portrait, speech = root / "portrait.png", root / "speech.wav"
    return (_need(portrait, "the bundled portrait") if image else portrait,
            _need(speech, "the bundled speech") if audio else speech)  # fmt: skip


@dataclass(frozen=True)
class DemoFolder:
    """A checked demo model folder (:func:`check_demo_folder`)."""

    root: Path
    model: Path  # model.safetensors: the trained transformer and conditioners
    vae: Path  # the vae/ folder
    card: dict[str, Any]
    seed: int  # the frozen encoders' seed, the one the model was trained with
    generation: dict[str, Any]  # the card's own generation settings

    @property
    def card_path(self) -> Path:
        return self.root / "card.json"

    @property
    def defaults(self) -> dict[str, Any]:
        """The settings the held-out scores were measured with: the card's over :data:`DEMO_GENERATION`."""
        return {**DEMO_GENERATION, **self.generation}


def check_demo_folder(directory: str | Path | None = None) -> DemoFolder:
    """Check a demo model folder as :func:`load_demo` does, without building the model: ``model.safetensors``,
    ``card.json`` (with the integer training ``seed`` and known ``generation`` settings), ``vae/config.json``, and a
    card seed that is the one the model was trained with. A :class:`WeightsError` that names what is wrong otherwise."""
    from fantasytalking.training.export import read_export_config

    root = _folder(directory)
    model = _need(root / "model.safetensors", "the trained transformer and conditioners")
    card = demo_card(root)
    seed = card_int(card, "seed", root / "card.json", "the demo model cannot be rebuilt without its training seed")
    generation = _card_generation(card, root / "card.json")
    vae = _need(root / "vae" / "config.json", "the demo VAE").parent
    # The frozen text / image encoders are not in the export: they are rebuilt from the card's seed, which must be
    # the one the model was trained with, or the model would run on encoders it never saw (no error, bad videos).
    trained = read_export_config(model).get("training", {}).get("backbone", {}).get("seed")
    if trained is not None and int(trained) != seed:
        raise WeightsError(f"{root / 'card.json'} says seed {seed}, but {model} was trained with backbone seed "
                           f"{trained}: the card and the model do not match; reinstall fantasytalking or re-package "
                           "the demo (docs/demo.md).")  # fmt: skip
    return DemoFolder(root=root, model=model, vae=vae, card=card, seed=seed, generation=generation)


def load_demo(directory: str | Path | None = None, *, device: str = "cpu") -> Any:
    """The trained demo pipeline (float32), with the segment length its held-out scores were measured with.

    ``pipe.demo_defaults`` holds the generation settings the held-out scores were measured with (the card's
    ``generation`` over :data:`DEMO_GENERATION`), and ``pipe.segment_frames`` their ``segment_frames`` (0: one
    clip for the whole speech).
    """
    from fantasytalking.errors import FantasyTalkingError
    from fantasytalking.training.presets import demo_pipeline

    folder = check_demo_folder(directory)
    try:
        pipe = demo_pipeline(folder.vae, seed=folder.seed, conditioning=folder.model)
    except FantasyTalkingError:
        raise
    except (OSError, ValueError, RuntimeError) as err:  # diffusers: unreadable / truncated / mismatched VAE files
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise WeightsError(f"cannot load the demo model from {folder.root} ({reason}); reinstall fantasytalking or "
                           "re-package the demo (docs/demo.md).") from None  # fmt: skip
    pipe.demo_defaults = folder.defaults
    pipe.segment_frames = int(pipe.demo_defaults["segment_frames"])
    pipe.source_files[:] = [str(folder.model), str(folder.vae)]
    return pipe.to(device)


def flat_colour_fraction(image: Any) -> float:
    """Share of pixels whose 3x3 neighbourhood is one colour (within 2 levels): ~0.6-0.9 for SynthTalk's
    drawn faces, ~0.0-0.2 for photos (sensor noise and texture)."""
    rgb = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.int16)  # (H, W, 3)
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 3:
        raise InputError(f"expected an RGB image of at least 3x3 pixels, got shape {rgb.shape}")
    center = rgb[1:-1, 1:-1]
    flat = np.ones(center.shape[:2], dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = rgb[1 + dy : rgb.shape[0] - 1 + dy, 1 + dx : rgb.shape[1] - 1 + dx]
            flat &= np.abs(shifted - center).max(axis=-1) <= 2
    return float(flat.mean())


def _face_crop(rgb: np.ndarray) -> np.ndarray | None:
    """The box of the face's 68 landmarks in ``rgb`` (``uint8 (H, W, 3)``), or None when no face is found."""
    from fantasytalking.errors import FantasyTalkingError
    from fantasytalking.face import detect_face_landmarks
    from fantasytalking.face.landmarks import box_from_landmarks

    try:
        _, landmarks = detect_face_landmarks(rgb)
    except FantasyTalkingError:  # no face: the whole image decides (the generation says what is missing)
        return None
    box = box_from_landmarks(landmarks)
    x0, y0, x1, y1 = (max(int(v), 0) for v in (np.floor(box.x0), np.floor(box.y0), np.ceil(box.x1), np.ceil(box.y1)))
    crop = rgb[y0:y1, x0:x1]
    return crop if min(crop.shape[:2]) >= 3 else None


def domain_note(image: Any) -> str | None:
    """A console note when ``image`` does not look like a SynthTalk face (the demo's only domain), else None.

    Measured on the face (its landmarks' box) when one is found, else on the whole image: a photo of a face on a
    flat (e.g. white, cut-out) background is mostly flat colour, its face is not.
    """
    rgb = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    fraction, where = flat_colour_fraction(rgb), ""
    crop = _face_crop(np.ascontiguousarray(rgb, dtype=np.uint8)) if rgb.ndim == 3 else None
    if crop is not None:
        fraction, where = min(fraction, flat_colour_fraction(crop)), " in the face"
    if fraction >= FLAT_THRESHOLD:
        return None
    return (
        f"this image looks like a photo (only {fraction:.0%} flat-colour pixels{where}): the demo model was trained "
        "on SynthTalk's drawn faces only, so it will not animate this face faithfully; for photos use the real "
        "FantasyTalking weights (docs/weights.md)."
    )


def make_demo_inputs(directory: str | Path, *, seed: int = 7, seconds: float = 4.0, size: int = 256,
                     language: str = "en") -> dict[str, Any]:  # fmt: skip
    """Write the bundled inputs: ``portrait.png`` (first frame) and ``speech.wav`` (16 kHz) of the first
    held-out SynthTalk clip of ``seed`` whose speech fills at least 80% of ``seconds``; returns its description.

    The held-out split's identities, sentences and voices are never seen in training.
    """
    import soundfile as sf
    from PIL import Image

    from fantasytalking.data.synthtalk import SynthConfig, make_clip

    frames = round(seconds * 23 / 4) * 4 + 1
    cfg = SynthConfig(size=size, num_frames=frames, fps=23.0, seed=seed, split="heldout", languages=(language,))
    for index in range(64):
        clip = make_clip(cfg, index)
        if clip.column("speaking").mean() >= 0.8:
            break
    else:  # pragma: no cover - the bank has long sentences
        raise InputError(f"no held-out {language} sentence of seed {seed} fills {seconds} s; try another seed")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(clip.frames[0]).save(out / "portrait.png")
    sf.write(out / "speech.wav", clip.audio, 16000, subtype="PCM_16")
    info = {k: clip.info[k] for k in ("split", "seed", "index", "identity_id", "language", "sentence", "voice",
                                      "rate")}  # fmt: skip
    return {**info, "seconds": round(len(clip.audio) / 16000, 3), "size": size}
