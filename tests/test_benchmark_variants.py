"""The variant benchmark (benchmarks/variants.py) must keep running in quick mode: rows and table, not values."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


class _FakeI3D(torch.nn.Module):
    """The TorchScript I3D's interface: (K, 3, T, 224, 224) in [-1, 1] -> (K, 400) features."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4 * 4, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = True, return_features: bool = True):
        pooled = torch.nn.functional.adaptive_avg_pool3d(x, (1, 4, 4)).flatten(1)  # (K, 48)
        return self.proj(pooled)


def fake_i3d(path: Path) -> Path:
    torch.manual_seed(0)
    torch.jit.script(_FakeI3D()).save(str(path))
    return path


def test_fvd_column_without_i3d_is_null_with_the_file_to_fetch():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import variants

    with pytest.raises(RuntimeError, match=r"i3d_torchscript\.pt"):
        variants.row_fvd([], None)


def test_records_name_the_cpu_model_not_only_the_architecture(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import variants

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\n")
    assert variants.cpu_name(info) == "Intel(R) Xeon(R) Platinum 8488C"
    monkeypatch.setattr(variants.platform, "processor", lambda: "")
    monkeypatch.setattr(variants.platform, "machine", lambda: "aarch64")
    assert variants.cpu_name(tmp_path / "missing") == "aarch64"  # no /proc (macOS): what platform knows
    monkeypatch.setattr(variants, "cpu_name", lambda: "Intel(R) Xeon(R) Platinum 8488C")
    assert variants.device_name({"device": "cpu"}).startswith("CPU (Intel(R) Xeon(R) Platinum 8488C, ")


@pytest.mark.slow
@pytest.mark.skipif(not espeak_available(), reason="libespeak-ng1 is not installed (SynthTalk speech)")
def test_variants_quick_smallest(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    i3d = fake_i3d(tmp_path / "i3d.pt")
    command = [sys.executable, str(ROOT / "benchmarks" / "variants.py"), "--out", str(tmp_path / "results"),
               "--train-clips", "2", "--heldout-clips", "1", "--train-steps", "1", "--steps", "2",
               "--i3d", str(i3d)]  # fmt: skip
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

        # FVD: one value per row, between the row's videos and the held-out clips (a stand-in I3D here).
        assert row["summary"]["fvd"] is not None and row["summary"]["fvd"] >= 0, row["summary"]

    table = json_path.with_suffix(".md").read_text()
    assert "FVD ↓" in table
    assert "| variant |" in table and report["commit"] in table
    for name in ROWS:
        assert f"| {name} |" in table


def test_full_mode_trains_the_demo_preset_with_the_demo_vae(tmp_path):
    """Full mode: every variant is the demo recipe (demo overlay, the demo VAE, the frozen encoders' seed, a shared
    encode cache), trained on 17-frame clips and scored on 81-frame held-out clips (generated as one clip)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import variants
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from fantasytalking.training.presets import demo_vae

    vae = tmp_path / "vae"
    demo_vae().save_pretrained(str(vae))
    _, s = variants.parse_args(["--full", "--vae", str(vae)])
    assert (s["preset"], s["frames"], variants.heldout_frames(s)) == ("demo", 17, 81)
    command, export = variants.train_command("both", tmp_path / "runs", tmp_path / "train", s, [])
    joined = " ".join(command)
    assert "demo.yaml" in joined and "tiny.yaml" not in joined and export.name == "conditioning.safetensors"
    flag = command.index("--model.init_args.backbone.vae")
    assert command[flag + 1] == str(vae) and "--model.init_args.objective.cache_dir" in command
    _, quick = variants.parse_args([])
    assert quick["preset"] == "tiny" and variants.heldout_frames(quick) == quick["frames"]
    with pytest.raises(SystemExit):
        variants.demo_vae_path({"vae": str(tmp_path / "missing")})
