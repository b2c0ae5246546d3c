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
