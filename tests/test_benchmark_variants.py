"""The variant benchmark (benchmarks/variants.py) must keep running in quick mode: rows and table, not values."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fantasytalking.data.synthtalk import espeak_available

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    "clip-level only (stage 1)",
    "frame-level only (stage 2)",
    "both stages",
    "both stages, no face conditioner",
    "motion intensity 0.1",
    "motion intensity 0.5",
    "motion intensity 1.0",
    "audio guidance, all steps",
    "audio guidance, partial steps",
]
MEASURES = ["lipsync", "closed_in_silence", "landmark_lipsync", "identity_error", "head_motion", "motion_energy"]


@pytest.mark.slow
@pytest.mark.skipif(not espeak_available(), reason="libespeak-ng1 is not installed (SynthTalk speech)")
def test_variants_quick_smallest(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "benchmarks" / "variants.py"), "--out", str(tmp_path / "results"),
               "--train-clips", "2", "--heldout-clips", "1", "--train-steps", "1", "--steps", "2"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=170, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    (json_path,) = (tmp_path / "results").glob("variants-quick-*.json")
    report = json.loads(json_path.read_text())
    assert [row["name"] for row in report["rows"]] == ROWS
    for key in ("device", "date", "commit", "torch", "wall_seconds", "settings"):
        assert report[key] not in (None, ""), key
    assert report["settings"]["heldout_clips"] == 1 and report["failures"] == []
    assert {t["name"] for t in report["training"]} == {"clip", "frame", "both", "noface"}
    for row in report["rows"]:
        assert row["errors"] == [], row["errors"]
        (clip,) = row["clips"]
        assert clip["frames"] > 0
        # Values are noise: every measure is a number or a null with its reason, never missing.
        for name in MEASURES:
            assert name in clip["measures"]
            assert clip["measures"][name] is not None or clip["reasons"][name]

    table = json_path.with_suffix(".md").read_text()
    assert "| variant |" in table and report["commit"] in table
    for name in ROWS:
        assert f"| {name} |" in table
