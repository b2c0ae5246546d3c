"""SynthTalk faces: random identities, their geometry (with the 68 iBUG landmarks) and an anti-aliased renderer.

Geometry lives in face-local units: origin at the face centre, ``x`` right, ``y`` down, one unit = the face's
half-width ``a`` (``identity.face_w`` of the frame side). Each frame maps local points to pixels by the head's
similarity transform (translation, roll, scale); the shoulders follow the body sway instead.

Every shape is a polygon sampled from a parametric curve, drawn with PIL on a canvas ``supersample`` times larger
and reduced with a box filter (area averaging = anti-aliasing). The landmarks are samples of the same curves, so
``lip_mask``, ``facial_intensity`` and face alignment work on them exactly as on detected landmarks.

The mouth: outer lips (lip colour) around a dark interior (:data:`MOUTH_INTERIOR`) whose height is the opening;
at opening 0 the inner lips touch and no interior pixel is drawn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "MAX_GAP",
    "MOUTH_INTERIOR",
    "FaceGeometry",
    "FacePose",
    "Identity",
    "face_geometry",
    "random_identity",
    "render_background",
    "render_frame",
]

RGB = tuple[int, int, int]

#: Colour of the mouth interior (the measures look for it by darkness).
MOUTH_INTERIOR: RGB = (38, 8, 16)
#: Inner-lip gap at opening 1, in face half-widths.
MAX_GAP = 0.36

_SKIN_TONES = [(255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 145, 105), (170, 116, 80),
               (141, 92, 62), (120, 80, 56)]  # fmt: skip
_HAIR = [(25, 20, 18), (60, 40, 25), (110, 70, 40), (180, 140, 80), (220, 190, 120), (150, 60, 30),
         (160, 160, 160), (230, 230, 225), (40, 60, 140), (150, 40, 120)]  # fmt: skip
_EYES = [(70, 45, 25), (40, 100, 170), (60, 120, 70), (110, 110, 120), (130, 90, 40)]
_HAIR_STYLES = ("short", "long", "bald", "bob")
_PATTERNS = ("flat", "gradient", "stripes", "dots")
_GLASSES = ("none", "round", "square")


@dataclass(frozen=True)
class Identity:
    """One SynthTalk person: every parameter of the face, hair, accessories and background."""

    face_w: float  # half-width a of the face, fraction of the frame side
    aspect: float  # half-height / half-width
    chin: float  # 0 round .. 1 pointed
    center_y: float  # face centre, fraction of the frame side
    skin: RGB
    hair: RGB
    hair_style: str
    hairline: float  # 0 high forehead .. 1 low fringe
    eye_color: RGB
    eye_gap: float  # eye centre x, face units
    eye_size: float  # eye half-width, face units
    brow: float  # eyebrow thickness, face units
    nose: float  # nose length factor
    lips: RGB
    lip_up: float  # upper-lip thickness, face units
    lip_low: float
    mouth_w: float  # mouth half-width, face units
    glasses: str
    glasses_color: RGB
    earrings: bool
    earring_color: RGB
    background: RGB
    background2: RGB
    pattern: str
    shirt: RGB

    def to_dict(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Identity:
        kw = {f.name: tuple(d[f.name]) if isinstance(d[f.name], list) else d[f.name] for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**kw)  # type: ignore[arg-type]


def _jitter(rng: np.random.Generator, c: RGB, amount: float) -> RGB:
    return tuple(int(np.clip(v + rng.normal(0, amount), 0, 255)) for v in c)  # type: ignore[return-value]


def _colour(rng: np.random.Generator) -> RGB:
    return tuple(int(v) for v in rng.integers(0, 256, size=3))  # type: ignore[return-value]


def random_identity(rng: np.random.Generator) -> Identity:
    """A random identity (a fixed number of draws, so a seed always gives the same person)."""
    skin = _jitter(rng, _SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))], 8)
    hair = _jitter(rng, _HAIR[int(rng.integers(len(_HAIR)))], 10)
    if max(abs(h - s) for h, s in zip(hair, skin)) < 48:  # keep hair distinguishable from skin
        hair = _shade(hair, 0.45)
    # lips stay above ~0.6 of the skin's luma (the measures tell them from the near-black mouth interior)
    lips = tuple(int(np.clip(s * f, 0, 255)) for s, f in zip(skin, (0.92, 0.6, 0.62)))
    lips = _jitter(rng, lips, 5)  # type: ignore[arg-type]
    bg = _colour(rng)
    bg2 = _colour(rng)
    style = _HAIR_STYLES[int(rng.choice(len(_HAIR_STYLES), p=[0.35, 0.3, 0.1, 0.25]))]
    pattern = _PATTERNS[int(rng.integers(len(_PATTERNS)))]
    glasses = _GLASSES[int(rng.choice(3, p=[0.6, 0.2, 0.2]))]
    return Identity(
        face_w=float(rng.uniform(0.21, 0.25)),
        aspect=float(rng.uniform(1.15, 1.4)),
        chin=float(rng.uniform(0, 1)),
        center_y=float(rng.uniform(0.44, 0.5)),
        skin=skin,
        hair=hair,
        hair_style=style,
        hairline=float(rng.uniform(0, 1)),
        eye_color=_jitter(rng, _EYES[int(rng.integers(len(_EYES)))], 10),
        eye_gap=float(rng.uniform(0.36, 0.46)),
        eye_size=float(rng.uniform(0.15, 0.2)),
        brow=float(rng.uniform(0.04, 0.09)),
        nose=float(rng.uniform(0.8, 1.2)),
        lips=lips,
        lip_up=float(rng.uniform(0.06, 0.1)),
        lip_low=float(rng.uniform(0.08, 0.13)),
        mouth_w=float(rng.uniform(0.3, 0.4)),
        glasses=glasses,
        glasses_color=_jitter(rng, (30, 30, 30), 40) if rng.uniform() < 0.7 else _colour(rng),
        earrings=bool(rng.uniform() < 0.3),
        earring_color=_jitter(rng, (220, 190, 60), 30),
        background=bg,
        background2=bg2,
        pattern=pattern,
        shirt=_colour(rng),
    )


@dataclass
class FacePose:
    """One frame's state: mouth ``open / width / round`` in [0, 1], ``blink`` (0 open .. 1 closed), head
    translation ``dx, dy`` (fraction of the side), ``roll`` (rad), ``scale``, body sway ``body_dx, body_dy``."""

    open: float = 0.0
    width: float = 0.5
    round: float = 0.0
    blink: float = 0.0
    dx: float = 0.0
    dy: float = 0.0
    roll: float = 0.0
    scale: float = 1.0
    body_dx: float = 0.0
    body_dy: float = 0.0


@dataclass
class FaceGeometry:
    """Local-unit shapes of one frame (each ``(K, 2)``) and the local -> pixel transform."""

    shapes: dict[str, np.ndarray]
    landmarks: np.ndarray  # (68, 2) local units
    gap: float  # inner-lip gap, local units


def _arc(cx: float, cy: float, rx: float, ry: float, t0: float, t1: float, n: int) -> np.ndarray:
    t = np.linspace(t0, t1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], -1)


def _outline(ident: Identity, theta: np.ndarray, jaw_drop: float) -> np.ndarray:
    """Face outline points at angles ``theta`` (0 = right, pi/2 = chin), local units."""
    b = ident.aspect
    low = np.clip(np.sin(theta), 0, None)
    x = np.cos(theta) * (1 - ident.chin * 0.3 * low**1.5)
    y = np.sin(theta) * b + jaw_drop * low**2
    return np.stack([x, y], -1)


def face_geometry(ident: Identity, pose: FacePose) -> FaceGeometry:
    """Shapes and 68 landmarks of ``ident`` in ``pose`` (face-local units; see the module doc)."""
    b = ident.aspect
    o = float(np.clip(pose.open, 0, 1))
    gap = MAX_GAP * o
    jaw_drop = 0.35 * gap
    shapes: dict[str, np.ndarray] = {}
    shapes["face"] = _outline(ident, np.linspace(0, 2 * np.pi, 72, endpoint=False), jaw_drop)
    delta = 0.15
    jaw = _outline(ident, np.linspace(np.pi + delta, -delta, 17), jaw_drop)  # 0..16, image left to right

    # eyes: 36-41 (image left), 42-47 (image right)
    eye_y = -0.12 * b
    ew, eh = ident.eye_size, ident.eye_size * 0.55
    openness = 1.0 - float(np.clip(pose.blink, 0, 1))
    eh_open = max(eh * openness, 0.0)
    eyes_lm = []
    for side in (-1, 1):
        cx = side * ident.eye_gap
        outer, inner = cx + side * ew, cx - side * ew
        xs = np.array([outer, cx + side * ew / 3, cx - side * ew / 3, inner, cx - side * ew / 3, cx + side * ew / 3])
        prof = np.sqrt(np.clip(1 - ((xs - cx) / ew) ** 2, 0, 1))
        ys = eye_y + np.array([0, -1, -1, 0, 1, 1]) * eh_open * prof
        eyes_lm.append(np.stack([xs, ys], -1))
        if side == 1:  # the left eye's landmark order starts at the inner corner: 42 inner, 43, 44 top, 45 outer
            eyes_lm[-1] = eyes_lm[-1][[3, 2, 1, 0, 5, 4]]
        key = "eye_l" if side < 0 else "eye_r"
        shapes[key] = _arc(cx, eye_y, ew, max(eh_open, 1e-4), 0, 2 * np.pi, 24)
        ir = eh * 0.85
        shapes[key + "_iris"] = _arc(cx, eye_y, ir, min(ir, eh_open), 0, 2 * np.pi, 16)
        shapes[key + "_pupil"] = _arc(cx, eye_y, ir * 0.45, min(ir * 0.45, eh_open), 0, 2 * np.pi, 12)
        shapes[key + "_socket"] = _arc(cx, eye_y, ew * 1.02, eh * 1.05, 0, 2 * np.pi, 24)
    # eyebrows: 17-21 (image left, outer to inner), 22-26 (image right, inner to outer)
    brow_y = eye_y - 0.26
    brows = []
    for side in (-1, 1):
        xs = side * np.linspace(ident.eye_gap + 0.22, ident.eye_gap - 0.2, 5)
        ys = brow_y - 0.05 * np.sin(np.linspace(0, np.pi, 5))
        pts = np.stack([xs, ys], -1)
        brows.append(pts if side < 0 else pts[::-1])
        shapes["brow_l" if side < 0 else "brow_r"] = np.concatenate([pts, pts[::-1] + np.array([0.0, ident.brow])])
    # nose: bridge 27-30, nostrils 31-35
    tip_y = 0.3 * b * ident.nose
    bridge = np.stack([np.zeros(4), np.linspace(eye_y, tip_y, 4)], -1)
    nostrils = np.stack([np.linspace(-0.14, 0.14, 5), tip_y + 0.06 - 0.03 * np.cos(np.linspace(-1.2, 1.2, 5))], -1)
    shapes["nose"] = np.array([[-0.02, eye_y + 0.1], [0.02, eye_y + 0.1], [0.11, tip_y + 0.04], [0.0, tip_y + 0.08],
                               [-0.11, tip_y + 0.04]])  # fmt: skip
    shapes["nostril_l"] = _arc(-0.07, tip_y + 0.06, 0.035, 0.02, 0, 2 * np.pi, 10)
    shapes["nostril_r"] = _arc(0.07, tip_y + 0.06, 0.035, 0.02, 0, 2 * np.pi, 10)

    # mouth: outer 48-59, inner 60-67
    my = 0.58 * b + 0.5 * jaw_drop
    w = ident.mouth_w * (0.85 + 0.3 * pose.width) * (1 - 0.35 * pose.round)
    w_in = 0.85 * w
    e = 2.0 + 1.5 * (1 - pose.round)  # inner shape: 2 = ellipse (round) .. 3.5 = flat, wide

    def prof(u: np.ndarray, ex: float) -> np.ndarray:
        return np.clip(1 - np.abs(u) ** ex, 0, 1) ** (1 / ex)

    def upper_outer(u: np.ndarray) -> np.ndarray:
        bow = 1 - 0.3 * np.exp(-((u / 0.18) ** 2))
        y = my - gap / 2 * prof(u * w / w_in, e) * (np.abs(u) * w < w_in) - ident.lip_up * np.sqrt(1 - u**2) * bow
        return np.stack([u * w, y], -1)

    def lower_outer(u: np.ndarray) -> np.ndarray:
        y = my + gap / 2 * prof(u * w / w_in, e) * (np.abs(u) * w < w_in) + ident.lip_low * np.sqrt(1 - u**2)
        return np.stack([u * w, y], -1)

    def inner(u: np.ndarray, sign: float) -> np.ndarray:
        return np.stack([u * w_in, my + sign * gap / 2 * prof(u, e)], -1)

    dense = np.linspace(-1, 1, 25)
    shapes["lips"] = np.concatenate([upper_outer(dense), lower_outer(dense[::-1])])
    shapes["mouth"] = np.concatenate([inner(dense, -1), inner(dense[::-1], 1)])
    uo = np.array([-1, -0.6, -0.25, 0, 0.25, 0.6, 1])
    lo = np.array([0.6, 0.25, 0, -0.25, -0.6])
    ui, li = np.array([-1, -0.5, 0, 0.5, 1]), np.array([0.5, 0, -0.5])
    lips_lm = np.concatenate([upper_outer(uo), lower_outer(lo), inner(ui, -1), inner(li, 1)])  # (20, 2)

    # hair and ears
    shapes["ear_l"] = _arc(-1.0, -0.02 * b, 0.14, 0.24, 0, 2 * np.pi, 16)
    shapes["ear_r"] = _arc(1.0, -0.02 * b, 0.14, 0.24, 0, 2 * np.pi, 16)
    top = _outline(ident, np.linspace(np.pi, 2 * np.pi, 24), 0.0) * [1.1, 1.12] + [0, -0.02]
    hl = -b * (0.35 + 0.3 * (1 - ident.hairline))
    if ident.hair_style != "bald":
        line = np.stack([np.linspace(1.08, -1.08, 12), hl + 0.06 * np.sin(np.linspace(0, np.pi, 12))], -1)
        fringe = np.concatenate([top[top[:, 1] <= hl + 0.25], line])
        shapes["hair_front"] = fringe
        if ident.hair_style in ("long", "bob"):
            bottom = b * (1.4 if ident.hair_style == "long" else 0.75)
            shapes["hair_back"] = np.concatenate([top, [[1.2, bottom], [-1.2, bottom]]])
        else:
            shapes["hair_back"] = np.concatenate([top, [[1.06, -0.1], [-1.06, -0.1]]])
    lm = np.concatenate([jaw, *brows, bridge, nostrils, *eyes_lm, lips_lm]).astype(np.float64)  # (68, 2)
    return FaceGeometry(shapes=shapes, landmarks=lm, gap=gap)


def _to_px(pts: np.ndarray, ident: Identity, pose: FacePose, side: float) -> np.ndarray:
    """Local units -> pixels of a ``side``-pixel frame (head transform)."""
    c, s = np.cos(pose.roll), np.sin(pose.roll)
    rot = np.array([[c, -s], [s, c]])
    unit = ident.face_w * side * pose.scale
    centre = np.array([0.5 + pose.dx, ident.center_y + pose.dy]) * side
    return pts @ rot.T * unit + centre


def render_background(ident: Identity, side: int) -> np.ndarray:
    """``uint8 (side, side, 3)`` background (static over a clip)."""
    c1, c2 = np.array(ident.background, np.float32), np.array(ident.background2, np.float32)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    if ident.pattern == "gradient":
        img = c1 + (c2 - c1) * yy[..., None]
    elif ident.pattern == "stripes":
        sel = (np.sin(2 * np.pi * 6 * (xx + 0.3 * yy)) > 0)[..., None]
        img = np.where(sel, c1, 0.6 * c1 + 0.4 * c2)
    elif ident.pattern == "dots":
        d = np.hypot((xx * 6) % 1 - 0.5, (yy * 6) % 1 - 0.5)[..., None]
        img = np.where(d < 0.2, 0.5 * c1 + 0.5 * c2, c1)
    else:
        img = np.broadcast_to(c1, (side, side, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _shade(c: RGB, f: float) -> RGB:
    return tuple(int(np.clip(v * f, 0, 255)) for v in c)  # type: ignore[return-value]


def render_frame(
    ident: Identity,
    pose: FacePose,
    size: int,
    *,
    supersample: int = 4,
    background: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one frame: ``uint8 (size, size, 3)`` and its landmarks ``float32 (68, 2)`` in pixel ``(x, y)``.

    ``background``: a prepared :func:`render_background` at ``size * supersample`` (reused across a clip).
    """
    ss = max(int(supersample), 1)
    side = size * ss
    bg = render_background(ident, side) if background is None else background
    img = Image.fromarray(bg)
    draw = ImageDraw.Draw(img)
    geo = face_geometry(ident, pose)
    sh = geo.shapes

    def poly(name: str, colour: RGB, p: FacePose = pose) -> None:
        if name in sh:
            pts = _to_px(sh[name], ident, p, side)
            draw.polygon([(float(x), float(y)) for x, y in pts], fill=colour)

    # body: neck and shoulders follow the sway; the neck's top follows the head
    body = FacePose(dx=pose.body_dx, dy=pose.body_dy, scale=1.0)
    b = ident.aspect
    neck_top = _to_px(np.array([[-0.42, 0.5 * b], [0.42, 0.5 * b]]), ident, pose, side)
    neck_bottom = _to_px(np.array([[0.45, b + 1.0], [-0.45, b + 1.0]]), ident, body, side)
    draw.polygon([tuple(map(float, p)) for p in np.concatenate([neck_top, neck_bottom])], fill=_shade(ident.skin, 0.62))
    sh["shoulders"] = _arc(0, b + 1.9, 2.3, 1.1, np.pi, 2 * np.pi, 32)
    sh["shoulders"] = np.concatenate([sh["shoulders"], [[2.3, 6.0], [-2.3, 6.0]]])
    poly("shoulders", ident.shirt, body)
    poly("hair_back", ident.hair)
    poly("ear_l", _shade(ident.skin, 0.9))
    poly("ear_r", _shade(ident.skin, 0.9))
    if ident.earrings:
        for x in (-1.02, 1.02):
            ring = _to_px(_arc(x, 0.25 * b, 0.07, 0.07, 0, 2 * np.pi, 10), ident, pose, side)
            draw.polygon([tuple(map(float, p)) for p in ring], fill=ident.earring_color)
    poly("face", ident.skin)
    for side_key in ("eye_l", "eye_r"):
        poly(side_key + "_socket", _shade(ident.skin, 0.93))
        if pose.blink < 0.97:
            poly(side_key, (245, 245, 240))
            poly(side_key + "_iris", ident.eye_color)
            poly(side_key + "_pupil", (12, 12, 12))
    poly("brow_l", _shade(ident.hair, 0.8))
    poly("brow_r", _shade(ident.hair, 0.8))
    poly("nose", _shade(ident.skin, 0.88))
    poly("nostril_l", _shade(ident.skin, 0.7))
    poly("nostril_r", _shade(ident.skin, 0.7))
    poly("lips", ident.lips)
    if geo.gap > 0:
        poly("mouth", MOUTH_INTERIOR)
    poly("hair_front", ident.hair)
    if ident.glasses != "none":
        width = max(round(0.05 * ident.face_w * side), 1)
        for cx in (-ident.eye_gap, ident.eye_gap):
            r = ident.eye_size * 1.35
            if ident.glasses == "round":
                ring = _arc(cx, -0.12 * b, r, r * 0.8, 0, 2 * np.pi, 24)
            else:
                ring = np.array([[cx - r, -0.12 * b - 0.8 * r], [cx + r, -0.12 * b - 0.8 * r],
                                 [cx + r, -0.12 * b + 0.8 * r], [cx - r, -0.12 * b + 0.8 * r]])  # fmt: skip
            pts = _to_px(np.concatenate([ring, ring[:1]]), ident, pose, side)
            draw.line([tuple(map(float, p)) for p in pts], fill=ident.glasses_color, width=width)
        br = _to_px(np.array([[-ident.eye_gap + ident.eye_size * 1.35, -0.12 * b],
                              [ident.eye_gap - ident.eye_size * 1.35, -0.12 * b]]), ident, pose, side)  # fmt: skip
        draw.line([tuple(map(float, p)) for p in br], fill=ident.glasses_color, width=width)
    out = np.asarray(img.resize((size, size), Image.Resampling.BOX)) if ss > 1 else np.asarray(img)
    lm = _to_px(geo.landmarks, ident, pose, size).astype(np.float32)  # (68, 2)
    return np.ascontiguousarray(out), lm
