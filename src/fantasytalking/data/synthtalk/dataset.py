"""SynthTalk clips and datasets: one clip in memory (:func:`make_clip`), or shards on disk (:func:`write_synthtalk`).

A dataset folder is exactly what ``fantasytalking preprocess`` writes (see :mod:`fantasytalking.data.format`:
``shard-*.tar``, ``manifest.jsonl``, ``stats.json``), so :class:`fantasytalking.data.TalkingClipDataModule` reads it
unchanged, plus ``synthtalk.json`` (the settings) and two ground-truth members per sample:

``truth.npy``   ``float32 (N, C)``, columns :data:`TRUTH_COLUMNS`: ``open`` (viseme opening in [0, 1] after
                co-articulation), ``gap`` (inner-lip gap as a fraction of the frame side: what the pixels show),
                ``width``, ``round``, ``speaking`` (a non-pause phoneme at the frame's midpoint), ``head_dx``,
                ``head_dy`` (fraction of the side), ``roll`` (rad), ``scale``, ``body_dx``, ``body_dy``, ``blink``
``truth.json``  identity parameters, identity id, split, seed, index, language, sentence (id and text), voice,
                rate, requested motion intensity, ``t0`` of the clip in the utterance, and the phoneme timeline
                ``[[mnemonic, start_s, end_s]]`` in clip time

Every sample is a pure function of the settings (``synthtalk.json``) and its index: the same arguments give the
same samples (the tar headers' mtimes aside). The settings include ``clips`` (the default identity pool is
``clips // 4``), so a longer run with the same seed does not start with the shorter run's clips. Held out:
sentences (``bank.sentences_for``), voices (``bank.VOICES``) and identities (identity seeds of the held-out split
come from a different seed stream, ``IDENTITY_STREAM[split]``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fantasytalking.data import format as fmt
from fantasytalking.data.synthtalk.animate import motion_track, mouth_track
from fantasytalking.data.synthtalk.bank import LANGUAGE_WEIGHTS, LANGUAGES, SPLITS, sentences_for, voices_for
from fantasytalking.data.synthtalk.face import (
    _GLASSES,
    _HAIR_STYLES,
    _PATTERNS,
    FacePose,
    Identity,
    random_identity,
    render_background,
    render_frame,
)
from fantasytalking.data.synthtalk.speech import SAMPLE_RATE, synthesize
from fantasytalking.errors import InputError

__all__ = [
    "IDENTITY_STREAM",
    "TRUTH",
    "TRUTH_COLUMNS",
    "TRUTH_JSON",
    "SynthClip",
    "SynthConfig",
    "SynthReport",
    "identity_for",
    "make_clip",
    "read_truth",
    "write_synthtalk",
]

log = logging.getLogger("fantasytalking.synthtalk")

TRUTH = "truth.npy"
TRUTH_JSON = "truth.json"
SETTINGS_FILE = "synthtalk.json"
TRUTH_COLUMNS = ("open", "gap", "width", "round", "speaking", "head_dx", "head_dy", "roll", "scale", "body_dx",
                 "body_dy", "blink")  # fmt: skip
#: Seed-stream salt of identities per split: the two splits never draw from the same stream.
IDENTITY_STREAM = {"train": 0x5EED_0001, "heldout": 0x5EED_0002}
_CLIP_STREAM = {"train": 0xC11B_0001, "heldout": 0xC11B_0002}


@dataclass
class SynthConfig:
    """Settings of a SynthTalk dataset (the CLI options map one to one)."""

    out_dir: Path | None = None
    clips: int = 100
    size: int = 64
    fps: float = 23.0
    num_frames: int = 33
    seed: int = 0
    split: str = "train"
    languages: tuple[str, ...] = LANGUAGES
    identities: int | None = None  # pool size (clips draw from it with replacement); default clips // 4, at least 1
    # clip i takes the pool's identity i mod pool instead of a draw with replacement: every identity of the pool
    # appears once before any repeats (a pool as large as the clip count gives one identity per clip); the
    # clip's other draws (sentence, voice, rate, motion, window) stay those of the default
    distinct_identities: bool = False
    motion: float | None = None  # fixed requested intensity; default: uniform in [0, 1] per clip
    # share of clips whose window ends with the utterance's final pause (at least PAUSE_TAIL_SECONDS of silence),
    # so the mouth closes within the clip; 0 (default): every window placed uniformly in the utterance
    pause_share: float = 0.0
    rate_range: tuple[int, int] = (130, 200)
    face_size: int = 224
    face_encoder: str = "dlib"  # a face encoder spec (make_face_encoder: dlib, dlib+head, ...) or "identity" (faster)
    supersample: int = 4
    clips_per_shard: int = 100
    crf: int = 18
    lip_margin: float = 0.15
    # processes that draw and encode clips (the shards are the same for any number: the main process writes the
    # clips in index order); not part of the dataset's identity, so not in synthtalk.json
    workers: int = 1

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir) if self.out_dir is not None else None
        self.languages = tuple(self.languages)

    def validate(self) -> None:
        if self.split not in SPLITS:
            raise InputError(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.clips < 1:
            raise InputError(f"--clips must be at least 1, got {self.clips}")
        if self.seed < 0:
            raise InputError(f"--seed must be 0 or a positive integer, got {self.seed}")
        if self.size < 32 or self.size % 16:
            raise InputError(f"--size must be a multiple of 16 and at least 32, got {self.size}")
        if self.num_frames < 1 or (self.num_frames - 1) % 4:
            raise InputError(f"--frames must be 4k+1 (e.g. 17, 33, 81), got {self.num_frames}")
        if not (np.isfinite(self.fps) and 1 <= self.fps <= 120):
            raise InputError(f"--fps must be between 1 and 120, got {self.fps}")
        bad = [lang for lang in self.languages if lang not in LANGUAGES]
        if bad or not self.languages:
            raise InputError(f"unknown language(s) {bad}; choose from {', '.join(LANGUAGES)}")
        if self.motion is not None and not 0 <= self.motion <= 1:
            raise InputError(f"--motion must be in [0, 1], got {self.motion}")
        if not 0 <= self.pause_share <= 1:
            raise InputError(f"--pause-share must be in [0, 1], got {self.pause_share}")
        if self.face_encoder != "identity":  # any face encoder spec (dlib, head, dlib+head, arcface:PATH)
            from fantasytalking.face.embed import parse_face_encoder_spec

            try:
                parse_face_encoder_spec(self.face_encoder)
            except InputError as err:
                raise InputError(f"--face-encoder: {err} (or identity)") from None
        if self.identities is not None and self.identities < 1:
            raise InputError(f"--identities must be at least 1, got {self.identities}")
        if self.workers < 1:
            raise InputError(f"--workers must be at least 1, got {self.workers}")
        # checked here, not where they are used: a late refusal would come after the output folder was made
        if self.face_size < 16:
            raise InputError(f"--face-size must be at least 16 px, got {self.face_size}")
        if not 0 <= self.crf <= 51:
            raise InputError(f"--crf must be between 0 and 51, got {self.crf}")
        if self.clips_per_shard < 1:
            raise InputError(f"--clips-per-shard must be at least 1, got {self.clips_per_shard}")
        lo, hi = self.rate_range
        if not 80 <= lo <= hi <= 450:
            raise InputError(f"rate_range must be (low, high) words per minute within 80-450, got {self.rate_range}")

    @property
    def identity_pool(self) -> int:
        return self.identities if self.identities is not None else max(1, self.clips // 4)

    def settings(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir) if self.out_dir else None
        del d["workers"]  # how it was written, not what: the same shards for any number
        d["format_version"] = fmt.FORMAT_VERSION
        return d


@dataclass
class SynthClip:
    """One clip in memory: frames ``uint8 (N, S, S, 3)``, audio ``float32 (T,)`` 16 kHz, landmarks
    ``float32 (N, 68, 2)``, truth ``float32 (N, C)`` (columns :data:`TRUTH_COLUMNS`) and its description."""

    frames: np.ndarray
    audio: np.ndarray
    landmarks: np.ndarray
    truth: np.ndarray
    identity: Identity
    info: dict[str, Any] = field(default_factory=dict)

    def column(self, name: str) -> np.ndarray:
        return self.truth[:, TRUTH_COLUMNS.index(name)]


def identity_for(split: str, seed: int, k: int) -> tuple[str, Identity]:
    """Identity ``k`` of the pool of ``(split, seed)``: ``(identity id, parameters)``."""
    rng = np.random.default_rng(np.random.SeedSequence([IDENTITY_STREAM[split], int(seed), int(k)]))
    return f"{split}-{seed}-{k}", random_identity(rng)


#: Final pause of a ``pause_share`` clip: longer than the 0.3 s the demo's closed-mouth target measures.
PAUSE_TAIL_SECONDS = 0.45


def _rng(cfg: SynthConfig, index: int, part: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([_CLIP_STREAM[cfg.split], int(cfg.seed), int(index), part]))


def make_clip(
    cfg: SynthConfig,
    index: int,
    *,
    motion: float | None = None,
    identity: Identity | None = None,
    text: str | None = None,
    silent: bool = False,
) -> SynthClip:
    """Clip ``index`` of the dataset ``cfg`` describes. Overrides (for benchmarks and tests): ``motion``
    intensity, ``identity``, ``text`` (spoken with the clip's voice) and ``silent`` (no speech at all)."""
    pick = _rng(cfg, index, 0)
    weights = np.array([LANGUAGE_WEIGHTS[lang] for lang in cfg.languages], dtype=np.float64)
    language = cfg.languages[int(pick.choice(len(cfg.languages), p=weights / weights.sum()))]
    sentences = sentences_for(cfg.split, language)
    sentence_id, sentence = sentences[int(pick.integers(len(sentences)))]
    voices = voices_for(cfg.split, language)
    voice = voices[int(pick.integers(len(voices)))]
    rate = int(pick.integers(cfg.rate_range[0], cfg.rate_range[1] + 1))
    k = int(pick.integers(cfg.identity_pool))  # drawn even when unused, so the draws after it do not move
    if cfg.distinct_identities:
        k = index % cfg.identity_pool
    intensity = float(pick.uniform(0, 1))
    lead = float(pick.uniform(0.1, 0.6))
    tail = float(pick.uniform(0.2, 0.6))
    where = float(pick.uniform(0, 1))
    # a window at the utterance's end, over its final pause (own stream: the other draws stay as they were)
    pause = cfg.pause_share > 0 and float(_rng(cfg, index, 2).uniform()) < cfg.pause_share
    if pause:
        where, tail = 1.0, max(tail, PAUSE_TAIL_SECONDS)
    if cfg.motion is not None:
        intensity = cfg.motion
    if motion is not None:
        intensity = float(motion)
    identity_id, ident = identity_for(cfg.split, cfg.seed, k)
    if identity is not None:
        identity_id, ident = "custom", identity
    if text is not None:
        sentence, sentence_id = text, -1

    n, fps = cfg.num_frames, float(cfg.fps)
    t_len = round(n * SAMPLE_RATE / fps)
    dur = n / fps
    if silent:
        speech_audio, phonemes, sentence = np.zeros(0, np.float32), [], ""
    else:
        sp = synthesize(sentence, voice=voice, rate=rate)
        speech_audio, phonemes = sp.audio, sp.phonemes
    a_lead, a_tail = round(lead * SAMPLE_RATE), round(tail * SAMPLE_RATE)
    full = np.concatenate([np.zeros(a_lead, np.float32), speech_audio, np.zeros(a_tail, np.float32)])  # (T_full,)
    timeline = [(p, a + lead, b + lead) for p, a, b in phonemes]
    total = full.size / SAMPLE_RATE
    t0 = round(where * max(total - dur, 0.0) * SAMPLE_RATE) / SAMPLE_RATE  # on a sample boundary
    a0 = round(t0 * SAMPLE_RATE)
    audio = full[a0 : a0 + t_len]
    audio = np.pad(audio, (0, t_len - audio.size)).astype(np.float32)  # (T,)

    mouth = mouth_track(timeline, n, fps, t0=t0)
    mot = motion_track(n, fps, intensity, _rng(cfg, index, 1), t0=t0)
    ss = max(1, min(int(cfg.supersample), max(1, 512 // cfg.size)))
    bg = render_background(ident, cfg.size * ss)
    frames = np.empty((n, cfg.size, cfg.size, 3), np.uint8)
    landmarks = np.empty((n, 68, 2), np.float32)
    gaps = np.empty(n, np.float32)
    for j in range(n):
        pose = _pose(mouth, mot, j)
        frames[j], landmarks[j] = render_frame(ident, pose, cfg.size, supersample=ss, background=bg)
        gaps[j] = float(np.linalg.norm(landmarks[j, 66] - landmarks[j, 62])) / cfg.size
    truth = np.stack([mouth.open, gaps, mouth.width, mouth.round, mouth.speaking, mot.head_dx, mot.head_dy,
                      mot.roll, mot.scale, mot.body_dx, mot.body_dy, mot.blink], axis=1).astype(np.float32)  # fmt: skip
    clip_phonemes = [[p, round(max(a - t0, 0.0), 4), round(min(b - t0, dur), 4)] for p, a, b in timeline
                     if b > t0 and a < t0 + dur]  # fmt: skip
    info = {
        "split": cfg.split,
        "seed": cfg.seed,
        "index": index,
        "identity_id": identity_id,
        "identity": ident.to_dict(),
        "language": language,
        "sentence_id": sentence_id,
        "sentence": sentence,
        "voice": voice,
        "rate": rate,
        "motion_intensity": intensity,
        "t0": t0,
        "lead_silence": lead,
        "pause_window": pause,
        "fps": fps,
        "num_frames": n,
        "size": cfg.size,
        "columns": list(TRUTH_COLUMNS),
        "phonemes": clip_phonemes,
    }
    return SynthClip(frames=frames, audio=audio, landmarks=landmarks, truth=truth, identity=ident, info=info)


def _pose(mouth: Any, mot: Any, j: int) -> FacePose:
    return FacePose(open=float(mouth.open[j]), width=float(mouth.width[j]), round=float(mouth.round[j]),
                    blink=float(mot.blink[j]), dx=float(mot.head_dx[j]), dy=float(mot.head_dy[j]),
                    roll=float(mot.roll[j]), scale=float(mot.scale[j]), body_dx=float(mot.body_dx[j]),
                    body_dy=float(mot.body_dy[j]))  # fmt: skip


def _identity_vector(ident: Identity) -> np.ndarray:
    """Numeric identity parameters as ``float32 (D,)`` (the ``identity`` face encoder)."""
    vals: list[float] = []
    for name, v in ident.to_dict().items():
        if isinstance(v, list):
            vals.extend(float(x) / 255.0 for x in v)
        elif isinstance(v, (bool, int, float)):
            vals.append(float(v))
        else:  # categorical: its index in the choices
            choices = {"hair_style": _HAIR_STYLES, "pattern": _PATTERNS, "glasses": _GLASSES}[name]
            vals.append(choices.index(str(v)) / max(len(choices) - 1, 1))
    return np.asarray(vals, dtype=np.float32)


class _Encoders:
    def __init__(self, cfg: SynthConfig) -> None:
        self.cfg = cfg
        self.face_encoder: Any = None
        if cfg.face_encoder != "identity":
            from fantasytalking.face.embed import make_face_encoder

            self.face_encoder = make_face_encoder(cfg.face_encoder)

    def reference(self, clip: SynthClip, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Aligned face ``uint8 (S, S, 3)`` from frame 0 rendered at a larger size, and embedding ``float32 (E,)``
        of frame 0 as the clip shows it (``cfg.size``), the frame preprocessing and inference embed: a dlib
        descriptor of the large render differs from it by about half the distance between two identities."""
        from fantasytalking.face.align import align_face

        cfg = self.cfg
        mouth = clip.truth[0]
        cols = dict(zip(TRUTH_COLUMNS, mouth.tolist()))
        pose = FacePose(open=cols["open"], width=cols["width"], round=cols["round"], blink=cols["blink"],
                        dx=cols["head_dx"], dy=cols["head_dy"], roll=cols["roll"], scale=cols["scale"],
                        body_dx=cols["body_dx"], body_dy=cols["body_dy"])  # fmt: skip
        side = max(cfg.size, 2 * cfg.face_size)
        big, lm = render_frame(clip.identity, pose, side, supersample=2)
        face = align_face(big, lm, cfg.face_size)
        if self.face_encoder is not None:
            emb = np.asarray(self.face_encoder.encode(clip.frames[0], clip.landmarks[0]), dtype=np.float32)  # (E,)
        else:
            emb = _identity_vector(clip.identity)
        return face, emb


def clip_members(
    clip: SynthClip, key: str, cfg: SynthConfig, encoders: _Encoders, tmp: Path
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Shard members (the preprocess format plus ``truth.npy``/``truth.json``) and the manifest record."""
    from fantasytalking.face.landmarks import box_from_landmarks
    from fantasytalking.face.mask import lip_mask
    from fantasytalking.face.motion import HeadShoulderProxy, body_intensity, facial_intensity
    from fantasytalking.io.video import json_default, write_video

    n, s = clip.frames.shape[:2]
    masks = lip_mask(clip.landmarks, s, s, margin=cfg.lip_margin)  # (N, S, S)
    face, emb = encoders.reference(clip, int(clip.info["index"]))
    boxes = np.stack([box_from_landmarks(lm).as_array() for lm in clip.landmarks])  # (N, 4)
    joints = HeadShoulderProxy().joints(clip.frames, clip.landmarks, boxes)  # (N, 8, 2)
    motion = {"face": facial_intensity(clip.landmarks), "body": body_intensity(joints)}
    mp4 = tmp / f"{key}.mp4"
    write_video(mp4, clip.frames, cfg.fps, crf=cfg.crf, overwrite=True)
    video_bytes = mp4.read_bytes()
    mp4.unlink()
    t0 = float(clip.info["t0"])
    source = f"synthtalk://{cfg.split}/{cfg.seed}/{clip.info['index']}"
    meta = {
        "format_version": fmt.FORMAT_VERSION,
        "key": key,
        "source": source,
        "clip": int(clip.info["index"]),
        "t0": t0,
        "fps": cfg.fps,
        "num_frames": n,
        "size": s,
        "audio_sample_rate": fmt.AUDIO_SAMPLE_RATE,
        "audio_samples": int(clip.audio.size),
        "audio_start_sample": round(t0 * fmt.AUDIO_SAMPLE_RATE),
        "av_offset": 0.0,
        "source_fps": cfg.fps,
        "source_size": [s, s],
        "crop_box": [0, 0, s, s],
        "landmark_backend": "synthtalk-geometry",
        "face_missing_fraction": 0.0,
        "face_size": cfg.face_size,
        "face_encoder": getattr(encoders.face_encoder, "name", "synthtalk-identity"),
        "embedding_dim": int(emb.shape[0]),
        "lip_mask_shape": [n, s, s],
        "lip_margin": cfg.lip_margin,
        "pose_source": HeadShoulderProxy.name,
        "prompt": fmt.DEFAULT_PROMPT,
        "wav2vec": None,
        "latents": None,
    }
    members = {
        fmt.VIDEO: video_bytes,
        fmt.AUDIO: fmt.to_npy(clip.audio.astype(np.float32)),
        fmt.LANDMARKS: fmt.to_npy(clip.landmarks.astype(np.float32)),
        fmt.LIP_MASK: fmt.to_npy(fmt.pack_lip_mask(masks)),
        fmt.FACE: fmt.encode_png(face),
        fmt.FACE_EMBEDDING: fmt.to_npy(emb),
        fmt.MOTION: json.dumps(motion).encode("utf-8"),
        fmt.META: json.dumps(meta, ensure_ascii=False, default=json_default).encode("utf-8"),
        TRUTH: fmt.to_npy(clip.truth.astype(np.float32)),
        TRUTH_JSON: json.dumps(clip.info, ensure_ascii=False, default=json_default).encode("utf-8"),
    }
    record = {"key": key, "source": source, "stem": key.rsplit("_", 1)[0], "clip": int(clip.info["index"]),
              "t0": t0, "num_frames": n, "fps": cfg.fps, "motion": motion}  # fmt: skip
    return members, record


def _clip_members_at(
    cfg: SynthConfig, encoders: _Encoders, stem: str, index: int, tmp: str
) -> tuple[str, dict[str, bytes], dict[str, Any]]:
    """Clip ``index`` drawn and encoded: ``(key, members, manifest record)``."""
    key = fmt.clip_key(stem, index)
    members, record = clip_members(make_clip(cfg, index), key, cfg, encoders, Path(tmp))
    return key, members, record


_WORKER: dict[str, Any] = {}  # a pool worker's config and encoders (set by _init_worker)
#: Thread pools a worker would otherwise size to the whole machine (OpenBLAS, OpenMP, MKL).
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Start pool workers with one BLAS / OpenMP thread each (where the caller set no count): N workers with N
    spinning threads each ran 2.2x slower on a 16-core machine (benchmarks/results/device-2026-12-04/)."""
    added = [name for name in _THREAD_VARIABLES if name not in os.environ]
    os.environ.update(dict.fromkeys(added, "1"))
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _init_worker(cfg: SynthConfig) -> None:
    _WORKER["cfg"], _WORKER["encoders"] = cfg, _Encoders(cfg)


def _worker_clip(job: tuple[str, int, str]) -> tuple[str, dict[str, bytes], dict[str, Any]]:
    stem, index, tmp = job
    return _clip_members_at(_WORKER["cfg"], _WORKER["encoders"], stem, index, tmp)


@dataclass
class SynthReport:
    out_dir: Path
    clips: int
    shards: int
    seconds: float

    def summary(self) -> str:
        rate = self.clips / self.seconds * 60 if self.seconds > 0 else float("inf")
        return (f"wrote {self.clips} SynthTalk clips in {self.shards} shard(s) to {self.out_dir} "
                f"in {self.seconds:.1f} s ({rate:.0f} clips/min)")  # fmt: skip


#: Files of a dataset folder (preprocess's and SynthTalk's): a folder holding any of them is refused, so everything
#: of these names in the folder during a run is the run's own (and removed again if the run fails).
_DATASET_FILES = (fmt.MANIFEST, fmt.STATS, fmt.REJECTIONS, fmt.PROGRESS, fmt.SETTINGS, ".preprocess.lock",
                  SETTINGS_FILE)  # fmt: skip


def _held_dataset_file(out: Path) -> str | None:
    """Name of a dataset file (or shard, finished or not) already in ``out``, or None."""
    for name in _DATASET_FILES:
        if (out / name).exists():
            return name
    return next((path.name for pattern in (fmt.SHARD_GLOB, f".{fmt.SHARD_GLOB}.tmp") for path in out.glob(pattern)),
                None)  # fmt: skip


def _remove_partial(out: Path, shards: Sequence[str], made: Path | None) -> None:
    """Undo a failed run: its finished shards, manifest, settings and statistics, and the folders it made."""
    for name in (*shards, fmt.MANIFEST, fmt.STATS, SETTINGS_FILE):
        with contextlib.suppress(OSError):
            (out / name).unlink()
    if made is not None:
        folder = out
        while True:
            try:
                folder.rmdir()  # only when empty: never removes anything else
            except OSError:
                break
            if folder == made:
                break
            folder = folder.parent


def write_synthtalk(cfg: SynthConfig, *, progress: Callable[[int, int], None] | None = None) -> SynthReport:
    """Write ``cfg.clips`` clips of ``cfg.split`` into ``cfg.out_dir`` as shards (see the module doc).

    All or nothing: a run that fails or is interrupted removes what it wrote (shards, manifest, settings and the
    folders it made), so a folder never holds part of a dataset."""
    # The shard writer and statistics of preprocessing, so both folders are written the same way.
    from fantasytalking.data.preprocess import ShardWriter, append_jsonl, write_stats
    from fantasytalking.io.video import write_json_atomic

    cfg.validate()
    if cfg.out_dir is None:
        raise InputError("give an output folder with --out")
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder; give a new or empty folder")
    held = _held_dataset_file(out) if out.exists() else None
    if held is not None:
        raise InputError(f"{out} already holds a dataset ({held}); choose an empty --out folder or delete it first")
    made = next((p for p in reversed([out, *out.parents]) if not p.exists()), None)  # topmost folder made here
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create --out {out} ({err.strerror or err}); choose a writable folder") from None
    start = time.perf_counter()
    shards: list[str] = []

    def on_commit(name: str, records: list[dict[str, Any]]) -> None:
        shards.append(name)
        append_jsonl(out / fmt.MANIFEST, records)

    writer = ShardWriter(out, 0, cfg.clips_per_shard, 1 << 40, on_commit)
    stem = f"synthtalk-{cfg.split}-{cfg.seed}"
    pool: ProcessPoolExecutor | None = None
    try:
        write_json_atomic(out / SETTINGS_FILE, cfg.settings())
        with tempfile.TemporaryDirectory(prefix=".synth-", dir=out) as tmp:
            if cfg.workers > 1:
                # spawn, not fork: each worker starts its own libespeak-ng and dlib (neither survives a fork well);
                # a worker that dies ends the run with BrokenProcessPool (nothing of the run is kept)
                with _single_threaded_children():
                    pool = ProcessPoolExecutor(min(cfg.workers, cfg.clips), mp_context=multiprocessing.get_context("spawn"),
                                               initializer=_init_worker, initargs=(cfg,))  # fmt: skip
                    jobs = pool.map(_worker_clip, [(stem, i, tmp) for i in range(cfg.clips)])  # in index order
            else:
                encoders = _Encoders(cfg)
                jobs = (_clip_members_at(cfg, encoders, stem, i, tmp) for i in range(cfg.clips))
            for i, (key, members, record) in enumerate(jobs):
                writer.add(key, members, record)
                if progress is not None:
                    progress(i + 1, cfg.clips)
            writer.commit()
            if pool is not None:
                pool.shutdown()
        write_stats(out)
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        writer.abort()
        _remove_partial(out, shards, made)
        raise
    return SynthReport(out_dir=out, clips=cfg.clips, shards=len(shards), seconds=time.perf_counter() - start)


def read_truth(
    shards: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """Ground truth of every sample in the shards: ``key -> (truth float32 (N, C), truth.json dict)``."""
    import tarfile

    from fantasytalking.data.datamodule import list_shards

    out: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
    for path in list_shards(shards):
        arrays: dict[str, np.ndarray] = {}
        infos: dict[str, dict[str, Any]] = {}
        with tarfile.open(path, "r") as tar:
            for member in tar:
                key, _, suffix = member.name.partition(".")
                if suffix in (TRUTH, TRUTH_JSON):
                    fh = tar.extractfile(member)
                    if fh is None:
                        continue
                    data = fh.read()
                    if suffix == TRUTH:
                        arrays[key] = fmt.from_npy(data)
                    else:
                        infos[key] = fmt.read_json_bytes(data)
        for key, arr in arrays.items():
            out[key] = (arr, infos.get(key, {}))
    return out
