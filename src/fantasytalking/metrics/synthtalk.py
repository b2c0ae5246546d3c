"""SynthTalk measures: lip sync, identity and motion read from the PIXELS of any video of a SynthTalk face.

Nothing here reads metadata: a generated video is scored exactly like a rendered one. The ground truth (truth.npy
of a SynthTalk shard, or :class:`fantasytalking.data.synthtalk.SynthClip`) is only what measures are compared to.

Method (frames ``uint8 (N, H, W, 3)``):

1. Skin colour: the dominant colour of the box ``x in [0.35, 0.65], y in [0.42, 0.68]`` of frame 0 (the pixel
   colour with the most pixels within half the skin tolerance, then the mean of those pixels).
2. Face region, per frame: pixels within :data:`SKIN_TOLERANCE` (max abs RGB difference) of the skin colour,
   connected components at least 20% the size of the largest (glasses can split a face), holes filled (eyes,
   brows, lips and the mouth lie inside it). A component on the frame's bottom row that lies wholly below the
   top of the skin box of step 1 is the shoulders in a shirt of nearly the skin's colour, and is left out. (A
   background of nearly the skin's colour that touches the face still joins the face region: a colour measure
   cannot tell them apart.)
3. Mouth opening, per frame: darkness ``d = clip((0.42 L_skin - L) / (0.42 L_skin - L_mouth), 0, 1)`` of each
   pixel (``L`` = Rec. 601 luma, ``L_mouth = 18``; lips, nostrils and shading stay above 0.6 of the skin's luma,
   the mouth interior is near black). Dark components (``d > 0.25``) inside the face region whose centre lies in the lower half of the
   region's rows are mouth candidates (eyes, brows and glasses lie in the upper half); the darkest one (largest
   sum of ``d``) is the mouth. The opening is the
   largest column sum of ``d`` over that component's box (one pixel margin): the inner-lip gap in pixels with
   sub-pixel precision from the anti-aliasing, divided by the frame height. No candidate: 0.
4. Lip sync: Pearson correlation of the measured opening with the truth opening.
5. Identity: features of the first frame (skin, hair band above the face, background corners, shirt colours,
   face-region width and height in frame units); the error is the mean absolute difference, colours in [0, 1].
   The reference is a frame (e.g. the portrait given to a model) or an :class:`Identity` (rendered neutral).
6. Motion: the standard deviation of the centroid of the face region's top (rows within 0.6 face widths of
   its top edge: head translation without the jaw), divided by the face width; :func:`motion_energy` adds the mean absolute frame difference.

"Mouth closed" means a measured opening below :data:`MOUTH_CLOSED_THRESHOLD` of the frame height (0.01: 0.64 px
at 64 px; a fully open SynthTalk mouth measures about 0.08).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FACE_COMPONENTS",
    "IDENTITY_COMPONENTS",
    "MOUTH_CLOSED_THRESHOLD",
    "SKIN_TOLERANCE",
    "SynthTalkScores",
    "as_frames",
    "combine_identity_components",
    "face_identity_error_over_frames",
    "face_regions",
    "head_motion",
    "identity_components_over_frames",
    "identity_error",
    "identity_error_by_frame",
    "identity_error_over_frames",
    "identity_features",
    "lipsync_correlation",
    "long_silences",
    "motion_energy",
    "mouth_closed_fraction",
    "mouth_opening",
    "score_synthtalk",
    "skin_colour",
]

#: Measured opening (fraction of the frame height) below which the mouth counts as closed.
MOUTH_CLOSED_THRESHOLD = 0.01
#: Max abs RGB difference from the skin colour for a face pixel.
SKIN_TOLERANCE = 26
_MOUTH_LUMA = 18.0  # luma of the SynthTalk mouth interior (38, 8, 16)
_DARK_MIN = 0.25
_DARK_FRACTION = 0.42  # darkness starts below this fraction of the skin's luma


def as_frames(video: Any) -> np.ndarray:
    """``uint8 (N, H, W, 3)`` from uint8 ``(N, H, W, 3)``, ``(3, N, H, W)`` or ``(N, 3, H, W)`` (array or tensor:
    values 0-255), a float array/tensor in one of those layouts in [-1, 1], or a path to a video file.

    A ``(3, 3, H, W)`` float video is read as ``(3, N, H, W)``. Floats are never read as [0, 1] or 0-255: values
    beyond [-1.5, 1.5] (e.g. 0-255 floats or ints) or non-finite ones are refused, not clipped to a blank video.
    """
    from fantasytalking.errors import InputError

    if isinstance(video, (str, bytes)) or hasattr(video, "__fspath__"):
        from fantasytalking.io.video import read_video

        return read_video(video)[0]
    if hasattr(video, "detach"):
        video = video.detach().cpu()
        # a uint8 tensor keeps its 0-255 values (made float, it was read as [-1, 1]: a white video)
        video = video.numpy() if str(video.dtype) == "torch.uint8" else video.float().numpy()
    arr = np.asarray(video)
    if arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[-1] == 3:
        return _nonempty(arr)
    if arr.ndim == 4 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 3, 0)  # (3, N, H, W) -> (N, H, W, 3)
    elif arr.ndim == 4 and arr.shape[1] == 3:
        arr = arr.transpose(0, 2, 3, 1)  # (N, 3, H, W) -> (N, H, W, 3)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(f"expected RGB video frames (N, H, W, 3), (3, N, H, W) or (N, 3, H, W), got shape {arr.shape}"
                         "; pass a video of 3-channel frames (a single frame as frame[None])")  # fmt: skip
    if arr.dtype != np.uint8:
        _nonempty(arr)
        x = arr.astype(np.float32)
        lo, hi = float(np.min(x)), float(np.max(x))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1.5 or hi > 1.5:
            raise InputError(f"{arr.dtype} video frames are read as [-1, 1], got values in [{lo:g}, {hi:g}]; pass "
                             "uint8 frames for 0-255 values, x * 2 - 1 for [0, 1], and no NaN or inf")  # fmt: skip
        arr = np.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return _nonempty(arr)


def _nonempty(frames: np.ndarray) -> np.ndarray:
    if frames.size == 0:
        from fantasytalking.errors import InputError

        raise InputError(f"the video has no pixels (frames of shape {frames.shape}); pass at least one frame")
    return frames


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _skin_box(h: int, w: int) -> tuple[slice, slice]:
    """Rows and columns of the centre box where the face's skin is sampled (step 1 of the module doc)."""
    return slice(int(0.42 * h), int(0.68 * h) + 1), slice(int(0.35 * w), int(0.65 * w) + 1)


def skin_colour(frame: np.ndarray) -> np.ndarray:
    """Dominant colour ``float32 (3,)`` of the centre box of one frame ``(H, W, 3)`` (step 1 of the module doc)."""
    box = frame[_skin_box(*frame.shape[:2])].reshape(-1, 3)
    px = box.astype(np.float32)[:: max(1, box.shape[0] // 4000)]  # (P, 3)
    cand = px[:: max(1, px.shape[0] // 200)]  # (C, 3)
    near = np.abs(cand[:, None] - px[None]).max(axis=-1) < SKIN_TOLERANCE / 2  # (C, P)
    best = int(near.sum(axis=1).argmax())
    return px[near[best]].mean(axis=0).astype(np.float32)


def face_regions(frames: np.ndarray, skin: np.ndarray | None = None) -> np.ndarray:
    """Filled face regions ``bool (N, H, W)`` (step 2 of the module doc)."""
    from scipy import ndimage

    frames = as_frames(frames)
    skin = skin_colour(frames[0]) if skin is None else np.asarray(skin, np.float32)
    out = np.zeros(frames.shape[:3], dtype=bool)
    box_top = _skin_box(*frames.shape[1:3])[0].start
    for i, f in enumerate(frames):
        mask = np.abs(f.astype(np.float32) - skin).max(axis=-1) < SKIN_TOLERANCE
        lab, num = ndimage.label(mask)
        if num == 0:
            continue
        sizes = np.bincount(lab.ravel())
        # a part on the frame's bottom row that lies wholly below the top of the skin box is the shoulders (a shirt
        # whose colour lies within the tolerance of the skin), not the face
        sizes[np.setdiff1d(np.unique(lab[-1]), np.unique(lab[: box_top + 1]))] = 0
        sizes[0] = 0
        if not sizes.any():
            continue
        keep = sizes >= 0.2 * sizes.max()  # glasses can cut the face in two: keep every large part
        keep[0] = False
        out[i] = ndimage.binary_fill_holes(keep[lab])
    return out


def mouth_opening(video: Any, *, skin: np.ndarray | None = None) -> np.ndarray:
    """Measured mouth opening per frame, ``float32 (N,)`` as a fraction of the frame height (module doc, step 3)."""
    from scipy import ndimage

    frames = as_frames(video)
    skin = skin_colour(frames[0]) if skin is None else np.asarray(skin, np.float32)
    regions = face_regions(frames, skin)
    thr = _DARK_FRACTION * float(_luma(skin))
    span = max(thr - _MOUTH_LUMA, 1.0)
    h = frames.shape[1]
    out = np.zeros(frames.shape[0], dtype=np.float32)
    for i, (f, face) in enumerate(zip(frames, regions)):
        if not face.any():
            continue
        d = np.clip((thr - _luma(f.astype(np.float32))) / span, 0.0, 1.0) * face  # (H, W)
        rows = np.nonzero(face.any(axis=1))[0]
        mid = (rows[0] + rows[-1]) / 2  # eyes, brows and glasses lie above the middle of the face region
        lab, _ = ndimage.label(d > _DARK_MIN)
        best, best_mass = 0, 0.0
        for k, sl in enumerate(ndimage.find_objects(lab), start=1):
            if sl is None or (sl[0].start + sl[0].stop - 1) / 2 <= mid:
                continue
            mass = float(d[sl][lab[sl] == k].sum())
            if mass > best_mass:
                best, best_mass = k, mass
        if best == 0:
            continue
        sl = ndimage.find_objects(lab)[best - 1]
        y0, y1 = max(sl[0].start - 1, 0), min(sl[0].stop + 1, h)
        x0, x1 = max(sl[1].start - 1, 0), min(sl[1].stop + 1, frames.shape[2])
        out[i] = float(d[y0:y1, x0:x1].sum(axis=0).max()) / h
    return out


def _moves(x: np.ndarray) -> bool:
    """Whether a per-frame series ``(N,)`` varies (2 or more frames, not constant): Pearson needs both to."""
    x = np.asarray(x, dtype=np.float64).ravel()
    return bool(x.size >= 2 and not x.std() < 1e-12)  # NaN counts as moving: lipsync_correlation then refuses it


def lipsync_correlation(measured: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation of a measured opening with the truth.

    A measured opening that does not move (a mouth held still) scores 0: it follows none of the speech. A truth
    that does not move (a clip with no speech in these frames) has nothing to follow, so the score is undefined and
    refused (:func:`score_synthtalk` gives None for such a clip)."""
    a = np.asarray(measured, dtype=np.float64).ravel()
    b = np.asarray(truth, dtype=np.float64).ravel()
    if a.shape != b.shape:
        from fantasytalking.errors import InputError

        raise InputError(f"measured ({a.size} frames) and truth ({b.size} frames) must have the same length")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        from fantasytalking.errors import InputError

        name, x = ("measured", a) if not np.isfinite(a).all() else ("truth", b)
        where = np.flatnonzero(~np.isfinite(x))[:5].tolist()
        raise InputError(f"the {name} opening holds NaN or inf at frame(s) {where}; pass finite openings (the "
                         "'open' column of truth.npy)")  # fmt: skip
    if not _moves(b):
        from fantasytalking.errors import InputError

        raise InputError(f"the truth opening is constant over these {b.size} frame(s) (no speech to follow): lip sync "
                         "is undefined; score a clip whose speech moves the mouth, or skip lip sync for it")  # fmt: skip
    if not _moves(a):
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def mouth_closed_fraction(measured: np.ndarray, silent: np.ndarray) -> float:
    """Fraction of the ``silent`` frames (bool ``(N,)``) whose measured opening is below the closed threshold
    (1.0 when there is no silent frame)."""
    measured, silent = np.asarray(measured).ravel(), np.asarray(silent, dtype=bool).ravel()
    if measured.shape != silent.shape:
        from fantasytalking.errors import InputError

        raise InputError(f"measured opening ({measured.size} frames) and silent ({silent.size} frames) must have "
                         "the same length; cut both to the frames they share")  # fmt: skip
    m = measured[silent]
    return 1.0 if m.size == 0 else float((m < MOUTH_CLOSED_THRESHOLD).mean())


def long_silences(silent: Sequence[bool] | np.ndarray, fps: float, min_seconds: float = 0.3) -> np.ndarray:
    """The frames ``bool (N,)`` of silent runs (``silent``: bool ``(N,)``) lasting MORE than ``min_seconds``.

    A run shorter than that is a pause inside speech, where co-articulation may keep the mouth moving.
    """
    if not float(fps) > 0:
        from fantasytalking.errors import InputError

        raise InputError(f"the frame rate must be positive to time silences, got fps={fps}; pass the video's fps")
    silent = np.asarray(silent, dtype=bool).ravel()
    out = np.zeros_like(silent)
    longest = min_seconds * float(fps)
    start = None
    for i, s in enumerate([*silent.tolist(), False]):
        if s and start is None:
            start = i
        elif not s and start is not None:
            if i - start > longest:
                out[start:i] = True
            start = None
    return out


def identity_features(video: Any) -> np.ndarray:
    """Identity features ``float32 (14,)`` of the first frame: skin, hair, background, shirt RGB in [0, 1], and
    face-region width and height as fractions of the frame (module doc, step 5)."""
    frames = as_frames(video)
    f = frames[0].astype(np.float32)
    h, w = f.shape[:2]
    skin = skin_colour(frames[0])
    face = face_regions(frames[:1], skin)[0]
    if face.any():
        ys, xs = np.nonzero(face)
        top, x0, x1, bottom = ys.min(), xs.min(), xs.max(), ys.max()
    else:
        top, x0, x1, bottom = int(0.25 * h), int(0.3 * w), int(0.7 * w), int(0.75 * h)
    band = f[max(top - max(h // 16, 1), 0) : top + 1, x0 : x1 + 1].reshape(-1, 3)
    hair = np.median(band, axis=0) if band.size else np.zeros(3)
    c = max(h // 10, 1)
    corners = np.concatenate([f[:c, :c].reshape(-1, 3), f[:c, -c:].reshape(-1, 3)])
    background = np.median(corners, axis=0)
    rows = f[-max(h // 25, 1) :]
    shirt = np.median(np.concatenate([rows[:, int(0.2 * w) : int(0.35 * w)].reshape(-1, 3),
                                      rows[:, int(0.65 * w) : int(0.8 * w)].reshape(-1, 3)]), axis=0)  # fmt: skip
    size = np.array([(x1 - x0 + 1) / w, (bottom - top + 1) / h])
    return np.concatenate([skin / 255, hair / 255, background / 255, shirt / 255, size]).astype(np.float32)


def _reference_features(reference: Any, size: int) -> np.ndarray:
    from fantasytalking.data.synthtalk.face import FacePose, Identity, render_frame

    if isinstance(reference, Identity):
        frame, _ = render_frame(reference, FacePose(), size)
        return identity_features(frame[None])
    from fantasytalking.errors import InputError

    if reference is None:
        raise InputError("no identity reference given; pass a frame (H, W, 3), a video, an Identity or the "
                         "identity_features vector of the reference")  # fmt: skip
    ref = np.asarray(reference)
    if ref.ndim == 1:
        if ref.shape != (14,):
            raise InputError(f"an identity feature vector has 14 values (identity_features), got {ref.size}; pass "
                             "identity_features(reference) or the reference frame itself")  # fmt: skip
        return ref.astype(np.float32)
    if ref.ndim == 3:
        ref = ref[None]
    return identity_features(ref)


def identity_error(video: Any, reference: Any) -> float:
    """Mean absolute difference of :func:`identity_features` between a video and a reference: another video or
    frame ``(H, W, 3)``, a feature vector, or an :class:`~fantasytalking.data.synthtalk.face.Identity`
    (rendered at the video's size, neutral pose). Same person: about 0.01-0.03; another person: about 0.1-0.3."""
    frames = as_frames(video)
    a = identity_features(frames)
    b = _reference_features(reference, frames.shape[1])
    return float(np.abs(a - b).mean())


def identity_error_over_frames(video: Any, reference: Any, stride: int = 8) -> float:
    """Mean :func:`identity_error` of every ``stride``-th frame from frame ``stride`` on (the first frame of an
    image-to-video clip is the reference itself, so it says nothing alone); the last frame for shorter videos."""
    return float(identity_error_by_frame(video, reference, stride)[1].mean())


def identity_error_by_frame(video: Any, reference: Any, stride: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """:func:`identity_error` of each frame :func:`identity_error_over_frames` averages, kept apart: ``(frame
    indices int64 (P,), errors float64 (P,))``. It shows drift: whether the identity is lost as the video goes on
    (the mean of the errors is :func:`identity_error_over_frames`)."""
    index, diffs = _feature_errors_by_frame(video, reference, stride)
    return index, diffs.mean(axis=1).astype(np.float64)


def _feature_errors_by_frame(video: Any, reference: Any, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """The frames the identity measures use (every ``stride``-th from frame ``stride`` on; the last one for shorter
    videos) and their absolute feature differences from the reference: ``(int64 (P,), float32 (P, 14))``."""
    if int(stride) < 1:
        from fantasytalking.errors import InputError

        raise InputError(f"the identity stride is a number of frames, 1 or more, got {stride}")
    frames = as_frames(video)
    index = np.arange(stride, len(frames), stride) if len(frames) > stride else np.array([len(frames) - 1])
    ref = _reference_features(reference, frames.shape[1])
    return index.astype(np.int64), np.stack([np.abs(identity_features(frames[i][None]) - ref) for i in index])


#: The parts of :func:`identity_features`: name -> its slice of the 14 values.
IDENTITY_COMPONENTS: dict[str, slice] = {
    "skin": slice(0, 3), "hair": slice(3, 6), "background": slice(6, 9), "shirt": slice(9, 12),
    "face width": slice(12, 13), "face height": slice(13, 14),
}  # fmt: skip
#: The components that belong to the face itself (what a face-identity embedding sees): skin colour and face size.
FACE_COMPONENTS = ("skin", "face width", "face height")


def _feature_errors_over_frames(video: Any, reference: Any, stride: int) -> np.ndarray:
    """Absolute feature differences ``(14,)``, averaged over the frames :func:`identity_error_over_frames` uses."""
    return _feature_errors_by_frame(video, reference, stride)[1].mean(axis=0)


def identity_components_over_frames(video: Any, reference: Any, stride: int = 8) -> dict[str, float]:
    """:func:`identity_error_over_frames` split by :data:`IDENTITY_COMPONENTS`: each part's mean absolute feature
    difference (the total is their mean weighted by their sizes: 3, 3, 3, 3, 1, 1)."""
    diffs = _feature_errors_over_frames(video, reference, stride)
    return {name: float(diffs[sl].mean()) for name, sl in IDENTITY_COMPONENTS.items()}


def combine_identity_components(parts: dict[str, float], names: Sequence[str] | None = None) -> float:
    """The identity error over the components ``names`` (default: all, giving :func:`identity_error_over_frames`)
    from their :func:`identity_components_over_frames` values, each weighted by its number of features."""
    names = list(IDENTITY_COMPONENTS) if names is None else list(names)
    sizes = [IDENTITY_COMPONENTS[n].stop - IDENTITY_COMPONENTS[n].start for n in names]
    return float(sum(parts[n] * k for n, k in zip(names, sizes)) / sum(sizes))


def face_identity_error_over_frames(video: Any, reference: Any, stride: int = 8) -> float:
    """The identity error of the FACE alone (:data:`FACE_COMPONENTS`: skin colour, face width and height), over the
    frames :func:`identity_error_over_frames` uses: hair, shirt and background lie mostly outside the aligned face
    crop an identity embedding is computed from, so only this part can show what a face-identity branch does."""
    return combine_identity_components(identity_components_over_frames(video, reference, stride), FACE_COMPONENTS)


def head_motion(video: Any) -> float:
    """Head motion: std over the frames of the centroid of the face region's top (rows within 0.6 face widths of its
    top edge; pixels, both axes), divided by the mean face width (the jaw, which moves with speech, is left out)."""
    frames = as_frames(video)
    regions = face_regions(frames)
    cents, widths = [], []
    for r in regions:
        if not r.any():
            continue
        ys, xs = np.nonzero(r)
        width = xs.max() - xs.min() + 1
        upper = ys <= ys.min() + 0.6 * width  # the upper face moves rigidly; the jaw moves with speech
        cents.append((xs[upper].mean(), ys[upper].mean()))
        widths.append(width)
    if len(cents) < 2:
        return 0.0
    c = np.asarray(cents)
    return float(np.sqrt(c.var(axis=0).sum()) / np.mean(widths))


def motion_energy(video: Any) -> float:
    """Mean absolute difference of consecutive frames, in [0, 1] (everything that moves: head, mouth, eyes)."""
    f = as_frames(video).astype(np.float32)
    if f.shape[0] < 2:
        return 0.0
    return float(np.abs(np.diff(f, axis=0)).mean() / 255.0)


@dataclass
class SynthTalkScores:
    lipsync: float | None  # Pearson of measured vs truth opening; None: the truth does not move (no speech)
    closed_in_silence: float | None  # fraction of the (long) silent frames measured closed; None: no such frame
    identity_error: float | None
    head_motion: float
    motion_energy: float
    opening: np.ndarray  # (N,) measured

    def as_dict(self) -> dict[str, float | None]:
        return {"lipsync": self.lipsync, "closed_in_silence": self.closed_in_silence,
                "identity_error": self.identity_error, "head_motion": self.head_motion,
                "motion_energy": self.motion_energy}  # fmt: skip


def score_synthtalk(
    video: Any,
    truth_opening: np.ndarray,
    *,
    silent: np.ndarray | None = None,
    reference: Any = None,
    fps: float | None = None,
    min_silence_seconds: float = 0.3,
    identity_stride: int | None = None,
) -> SynthTalkScores:
    """All SynthTalk measures of one video against the truth opening ``(N,)``, over the frames both have.

    ``silent`` (bool ``(N,)``, one per truth frame, e.g. truth ``speaking == 0``) defaults to the frames whose truth
    opening is 0. With ``fps``, "closed in silence" counts only the silences longer than ``min_silence_seconds``;
    without, every silent frame; None when there is no such frame (never a score made up from no frame).
    ``lipsync`` is None when the truth opening does not move over those frames (no speech to follow).
    ``identity_stride``: the identity error is the mean over every k-th frame (:func:`identity_error_over_frames`);
    None: the first frame's (:func:`identity_error`).
    """
    from fantasytalking.errors import InputError

    frames = as_frames(video)
    truth = np.asarray(truth_opening, dtype=np.float32)
    if truth.ndim != 1:
        raise InputError(f"the truth opening is one value per frame (N,), got shape {truth.shape}; pass the "
                         "'open' column of truth.npy (fantasytalking.metrics.truth_of)")  # fmt: skip
    measured = mouth_opening(frames)
    n = min(measured.size, truth.size)
    if n < 2:
        raise InputError(f"a video and its truth need 2 or more frames in common, got {measured.size} and {truth.size}"
                         "; score a video of the clip, not a still")  # fmt: skip
    if silent is not None and np.size(silent) != truth.size:
        raise InputError(f"silent has {np.size(silent)} frames, the truth opening {truth.size}; pass one flag per "
                         "truth frame (truth.npy 'speaking' == 0: fantasytalking.metrics.truth_of)")  # fmt: skip
    sil = (truth[:n] <= 0) if silent is None else np.asarray(silent, bool).reshape(-1)[:n]
    if fps is not None:
        sil = long_silences(sil, fps, min_silence_seconds)
    if reference is None:
        ident = None
    elif identity_stride is None:
        ident = identity_error(frames, reference)
    else:
        ident = identity_error_over_frames(frames, reference, identity_stride)
    return SynthTalkScores(
        lipsync=(lipsync_correlation(measured[:n], truth[:n]) if _moves(truth[:n]) else None),
        closed_in_silence=(mouth_closed_fraction(measured[:n], sil) if sil.any() else None),
        identity_error=ident,
        head_motion=head_motion(frames),
        motion_energy=motion_energy(frames),
        opening=measured,
    )
