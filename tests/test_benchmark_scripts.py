"""The benchmark scripts must keep running: their CPU smoke mode, not their figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("extra", [[], ["--batch-passes"]])
def test_bench_14b_step_smoke(tmp_path, extra):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_14b_step.py"), "--steps", "1", "--warmup", "0",
                    "--out", str(tmp_path), *extra], check=True, capture_output=True, text=True, timeout=300)
    (record,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert record["full_size"] is False and record["passes_per_step"] == 3 and record["seconds_per_step"] > 0
    assert record["video"]["audio_window"] > 0 and record["batch_passes"] == bool(extra)


@pytest.mark.slow
def test_demo_targets_smoke(tmp_path):
    """benchmarks/demo_targets.py on a random demo model folder: two short held-out clips, one step."""
    from fantasytalking.data.synthtalk import SynthConfig, espeak_available, write_synthtalk
    from fantasytalking.testing import make_random_demo

    if not espeak_available():
        pytest.skip("libespeak-ng1 is not installed (SynthTalk speech)")
    demo = make_random_demo(tmp_path / "demo")
    heldout = tmp_path / "heldout"
    write_synthtalk(SynthConfig(out_dir=heldout, clips=2, size=96, num_frames=33, seed=1, split="heldout"))
    command = [sys.executable, str(ROOT / "benchmarks" / "demo_targets.py"), "--heldout", str(heldout),
               "--frames", "33", "--clips", "2", "--motion-clips", "1", "--steps", "1", "--out", str(tmp_path / "res"),
               "--model", str(demo / "model.safetensors"), "--vae", str(demo / "vae"), "--seed", "0"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = (tmp_path / "res").glob("demo-targets-*.json")
    report = json.loads(path.read_text())
    names = [row["name"] for row in report["rows"]]
    assert names[:3] == ["full model, own speech", "full model, silence", "full model, another sentence"]
    assert {"motion 0.1", "motion 0.5", "motion 1.0", "full model, face conditioner off"} <= set(names)
    assert set(report["checks"]) >= {"lipsync >= 0.6", "silence <= 0.15", "motion 0.1 < 0.5 < 1.0"}
    assert (tmp_path / "res" / path.name.replace(".json", ".md")).read_text().startswith("Demo model")
