"""SynthTalk: a synthetic talking-face world whose every mouth shape, identity and head motion is known.

Procedurally drawn faces (:mod:`.face`) speak sentences made with espeak-ng (:mod:`.speech`; phoneme timings from
libespeak-ng's synthesis callback); phonemes drive visemes with co-articulation, and a requested motion
intensity scales head motion, blinks and body sway (:mod:`.animate`). :mod:`.dataset` writes WebDataset shards in
exactly the format ``fantasytalking preprocess`` writes, plus per-frame ground truth; :mod:`.bank` holds the
sentences and voices with the held-out split. Measures on pixels: :mod:`fantasytalking.metrics.synthtalk`.

::

    from fantasytalking.data.synthtalk import SynthConfig, make_clip, write_synthtalk

    clip = make_clip(SynthConfig(size=64, num_frames=33, seed=0), index=0)
    clip.frames.shape, clip.audio.shape, clip.column("open").shape  # (33, 64, 64, 3), (22957,), (33,)
    write_synthtalk(SynthConfig(out_dir="synth/", clips=200, size=64, num_frames=33, seed=0))

Command line: ``fantasytalking synth --out DIR --clips N --size 64 --fps 23 --frames 33 --seed S --split train``.
Needs the Debian package ``libespeak-ng1`` (or ``espeak-ng``, which pulls it in).
"""

from fantasytalking.data.synthtalk.animate import MotionTrack, MouthTrack, motion_track, mouth_track, viseme
from fantasytalking.data.synthtalk.bank import LANGUAGES, SENTENCES, SPLITS, VOICES, sentences_for, voices_for
from fantasytalking.data.synthtalk.cli import add_synth_arguments, synth_from_args, synth_main
from fantasytalking.data.synthtalk.dataset import (
    TRUTH,
    TRUTH_COLUMNS,
    TRUTH_JSON,
    SynthClip,
    SynthConfig,
    SynthReport,
    identity_for,
    make_clip,
    read_truth,
    write_synthtalk,
)
from fantasytalking.data.synthtalk.face import FacePose, Identity, random_identity, render_frame
from fantasytalking.data.synthtalk.speech import Speech, espeak_available, synthesize

__all__ = [
    "LANGUAGES",
    "SENTENCES",
    "SPLITS",
    "TRUTH",
    "TRUTH_COLUMNS",
    "TRUTH_JSON",
    "VOICES",
    "FacePose",
    "Identity",
    "MotionTrack",
    "MouthTrack",
    "Speech",
    "SynthClip",
    "SynthConfig",
    "SynthReport",
    "add_synth_arguments",
    "espeak_available",
    "identity_for",
    "make_clip",
    "motion_track",
    "mouth_track",
    "random_identity",
    "read_truth",
    "render_frame",
    "sentences_for",
    "synth_from_args",
    "synth_main",
    "synthesize",
    "viseme",
    "voices_for",
    "write_synthtalk",
]
