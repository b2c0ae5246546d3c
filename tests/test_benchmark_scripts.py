"""The benchmark scripts must keep running: their CPU smoke mode, not their figures."""

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """A script of benchmarks/ as a module (its ``main(argv)`` runs in this process)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_example(name: str):
    """A script of examples/ as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_demo_and_heldout(tmp_path: Path) -> tuple[Path, Path]:
    """A random demo model folder and two 17-frame held-out SynthTalk clips (skips without espeak-ng)."""
    from fantasytalking.data.synthtalk import SynthConfig, espeak_available, write_synthtalk
    from fantasytalking.testing import make_random_demo

    if not espeak_available():
        pytest.skip("libespeak-ng1 is not installed (SynthTalk speech)")
    heldout = tmp_path / "heldout"
    write_synthtalk(SynthConfig(out_dir=heldout, clips=2, size=96, num_frames=17, seed=1, split="heldout"))
    return make_random_demo(tmp_path / "demo"), heldout


@pytest.mark.parametrize("extra", [[], ["--batch-passes"]])
def test_bench_14b_step_smoke(tmp_path, extra):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_14b_step.py"), "--steps", "1", "--warmup", "0",
                    "--out", str(tmp_path), *extra], check=True, capture_output=True, text=True, timeout=300)
    (record,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert record["full_size"] is False and record["passes_per_step"] == 3 and record["seconds_per_step"] > 0
    assert record["video"]["audio_window"] > 0 and record["batch_passes"] == bool(extra)


@pytest.mark.slow
def test_demo_targets_smoke(tmp_path, monkeypatch):
    """benchmarks/demo_targets.py on a random demo model folder: two short held-out clips, one step."""
    demo, heldout = random_demo_and_heldout(tmp_path)
    command = [sys.executable, str(ROOT / "benchmarks" / "demo_targets.py"), "--heldout", str(heldout),
               "--frames", "17", "--clips", "2", "--motion-clips", "1", "--steps", "1", "--out", str(tmp_path / "res"),
               "--model", str(demo / "model.safetensors"), "--vae", str(demo / "vae"), "--seed", "0",
               "--motion-gain", "2"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = (tmp_path / "res").glob("demo-targets-*.json")
    report = json.loads(path.read_text())
    names = [row["name"] for row in report["rows"]]
    assert names[:3] == ["full model, own speech", "full model, silence", "full model, another sentence"]
    assert {"motion 0.1", "motion 0.5", "motion 1.0", "full model, face conditioner off"} <= set(names)
    # the drifted reference: colour-shifted first frame, face tokens from the true portrait, with and without them
    drift_rows = ["full model, drifted reference", "full model, drifted reference, face conditioner off"]
    assert [n for n in names if "drifted" in n] == drift_rows
    assert set(report["checks"]) >= {"lipsync >= 0.6", "silence <= 0.15", "another sentence <= 0.15",
                                     "motion 0.1 < 0.5 < 1.0"}  # fmt: skip
    assert (tmp_path / "res" / path.name.replace(".json", ".md")).read_text().startswith(
        "Demo model on the SynthTalk held-out split")
    assert report["split"] == "heldout"  # read from the shards' synthtalk.json
    # every clip of every row names its SynthTalk identity (clips of one identity are not independent)
    assert all(isinstance(c["identity"], str) and c["identity"].startswith("heldout-")
               for row in report["rows"] for c in row["per_clip"])  # fmt: skip
    by = {row["name"]: row for row in report["rows"]}
    assert set(report["motion_embedding"]["norms"]) == {"0.1", "0.5", "1.0"}  # the conditioner, read directly
    # the motion rows (only they request a non-default motion) carry the gain they were measured at
    assert report["motion_gain"] == 2.0 and report["motion_embedding"]["at_gain"]["gain"] == 2.0
    assert [by[f"motion {lv}"]["motion_gain"] for lv in ("0.1", "0.5", "1.0")] == [2.0] * 3
    assert "motion_gain" not in by["full model, own speech"] and "motion gain 2" in path.with_suffix(".md").read_text()
    # motion 0.5 is the default request, whose videos the own-speech row already generated (the same generation at
    # every gain: tests/test_pipeline.py): its clips are taken from there, not generated again
    own_clips = by["full model, own speech"]["per_clip"]
    assert by["motion 0.5"]["same_generation_as"] == "full model, own speech"
    assert by["motion 0.5"]["per_clip"] == own_clips[:1] and by["motion 0.5"]["clips"] == 1
    assert by["motion 0.5"]["head_motion"] == pytest.approx(own_clips[0]["head_motion"])
    assert "same_generation_as" not in by["motion 0.1"] and "same_generation_as" not in by["motion 1.0"]
    # another sentence: each clip gets the other clip's sentence (its control, with two clips), and the row says
    # how well the video follows that sentence and what a perfect model would score
    another = by["full model, another sentence"]
    assert [c["control"] for c in another["per_clip"]] == [c["key"] for c in reversed(another["per_clip"])]
    assert {"lipsync_given", "lipsync_ceiling"} <= set(another)
    # the held-out videos themselves are the last row: their own truth fits them (the measures' ceiling); the
    # VAE round trip before it keeps the frame count and the face
    reference = report["rows"][-1]
    assert reference["name"] == "held-out videos themselves (ceiling)" and "lipsync_another_sentence" in reference
    assert reference["lipsync_another_sentence"] == pytest.approx(another["lipsync_ceiling"])
    assert reference["identity_error"] < 0.05
    assert reference["closed_in_long_silence"] is None or reference["closed_in_long_silence"] > 0.8
    assert names[-2] == "held-out videos through the demo VAE (architecture ceiling)"
    assert by[names[-2]]["head_motion"] is not None and by[names[-2]]["identity_error"] is not None
    # the face part of the identity error, per row and per clip (not a target: the part a face branch can move)
    assert all(row["identity_face_error"] is not None for row in report["rows"])
    assert "Identity error of the face alone" in path.with_suffix(".md").read_text()
    # where the identity error lies, per clip: its parts (weighted by their sizes, they give the whole error) and
    # its first and second half of the frames (17 frames: frames 8 and 16, one each)
    from fantasytalking.metrics import synthtalk as st

    for clip in by["full model, own speech"]["per_clip"]:
        parts = {name: clip[f"identity_{name.replace(' ', '_')}"] for name in st.IDENTITY_COMPONENTS}
        assert st.combine_identity_components(parts) == pytest.approx(clip["identity_error"], rel=1e-5)
        assert np.mean([clip["identity_early"], clip["identity_late"]]) == pytest.approx(clip["identity_error"], rel=1e-5)
    # the comparative targets carry their paired difference over the clips (2 clips here; 1 for motion: none)
    assert report["evidence"]["identity error: with face < without"]["clips"] == 2
    assert "motion 0.1 < 0.5 < 1.0" not in report["evidence"]  # one clip per motion row: no interval
    assert "paired difference over clips" in path.with_suffix(".md").read_text()
    assert all(by[n]["drift_colour_std"] == 0.15 and by[n]["identity_error"] is not None for n in drift_rows)
    # the drifted frame is what the model starts from: same seed and speech, another video than the portrait's
    assert by[drift_rows[0]]["per_clip"] != by["full model, own speech"]["per_clip"]
    assert report["evidence"]["drifted reference: identity error with face < without"]["clips"] == 2
    assert "Drifted reference: the first frame is the portrait" in path.with_suffix(".md").read_text()
    # in this process (no second interpreter start): the reference row alone, under its own name
    script = load_script("demo_targets")
    assert script.main([*command[2:], "--reference-only", "--out", str(tmp_path / "ref")]) == 0
    (ref_path,) = (tmp_path / "ref").glob("demo-targets-reference-*.json")
    assert [r["name"] for r in json.loads(ref_path.read_text())["rows"]] == [reference["name"]]
    # one row re-run, the rest reused: same rows in the same order, the reused ones stamped; the first record stays
    assert script.main([*command[2:], "--only", "reference", "--reuse", str(path)]) == 0
    (merged_path,) = set((tmp_path / "res").glob("demo-targets-*.json")) - {path}
    assert merged_path.stem.endswith("-2") and json.loads(path.read_text()) == report
    merged = json.loads(merged_path.read_text())
    assert [r["name"] for r in merged["rows"]] == names and merged["checks"] == report["checks"]
    assert all(("measured" in r) == (r["name"] != reference["name"]) for r in merged["rows"])
    assert merged["rows"][0]["per_clip"] == report["rows"][0]["per_clip"]
    # --skip is the complement of --only: every row but those skipped re-run, the skipped ones reused
    others = [k for k in script.ROW_KEYS if k != "reference"]
    assert script.main([*command[2:], "--skip", *others, "--reuse", str(path)]) == 0
    (skipped_path,) = set((tmp_path / "res").glob("demo-targets-*.json")) - {path, merged_path}
    skipped = json.loads(skipped_path.read_text())
    assert [r["name"] for r in skipped["rows"]] == names
    assert [("measured" in r) for r in skipped["rows"]] == [("measured" in r) for r in merged["rows"]]
    skipped_path.unlink()
    skipped_path.with_suffix(".md").unlink()
    with pytest.raises(SystemExit, match="leave no row to measure"):
        script.main([*command[2:], "--only", "drift", "--skip", "drift"])
    with pytest.raises(SystemExit, match="other generation settings"):
        script.main([*command[2:], "--steps", "2", "--only", "reference", "--reuse", str(path)])
    with pytest.raises(SystemExit, match="other generation settings"):  # another backbone seed
        script.main([*command[2:], "--seed", "1", "--only", "reference", "--reuse", str(path)])
    # a record of ANOTHER model lends only the rows that never run --model: the VAE round trip, the held-out videos
    # and the stage-one row where its stage-one export is the same file; its model rows are refused by name
    assert report["stage1_sha256"] and report["backbone_seed"] == 0
    free = set(script.MODEL_FREE_ROWS)
    other_model = tmp_path / "other-model.json"
    other_model.write_text(json.dumps({**report, "model_sha256": "0" * 64,
                                       "rows": [r for r in report["rows"] if r["name"] in free]}))  # fmt: skip
    this_model = tmp_path / "this-model.json"
    this_model.write_text(json.dumps({**report, "rows": [r for r in report["rows"] if r["name"] not in free]}))
    before = set((tmp_path / "res").glob("demo-targets-*.json"))
    assert script.main([*command[2:], "--only", "own", "--reuse", str(this_model), str(other_model)]) == 0
    (lent_path,) = set((tmp_path / "res").glob("demo-targets-*.json")) - before
    lent = {r["name"]: r for r in json.loads(lent_path.read_text())["rows"]}
    assert set(lent) == set(by) and all(lent[n]["measured"]["record"] == "other-model.json" for n in free)
    assert lent[script.STAGE1_ROW]["per_clip"] == by[script.STAGE1_ROW]["per_clip"]
    for stale in (lent_path, lent_path.with_suffix(".md")):
        stale.unlink()
    with pytest.raises(SystemExit, match=r"another model, so its rows \['full model, own speech'"):
        other_model.write_text(json.dumps({**report, "model_sha256": "0" * 64}))
        script.main([*command[2:], "--only", "reference", "--reuse", str(other_model)])
    other_stage1 = {**report, "model_sha256": "0" * 64, "stage1_sha256": "1" * 64,
                    "rows": [r for r in report["rows"] if r["name"] in free]}  # fmt: skip
    other_model.write_text(json.dumps(other_stage1))  # another stage-one export: its stage-one row is refused
    with pytest.raises(SystemExit, match=r"rows \['stage one only, own speech'\] cannot stand"):
        script.main([*command[2:], "--only", "own", "--reuse", str(this_model), str(other_model)])
    with pytest.raises(SystemExit, match=r"measured at motion gain 2\.0, not 1\.0"):  # motion rows of another gain
        script.main([*command[2:], "--motion-gain", "1", "--only", "reference", "--reuse", str(path)])
    with pytest.raises(SystemExit, match=r"colour std 0\.15, not 0\.3"):  # drift rows of another drift
        script.main([*command[2:], "--drift-colour-std", "0.3", "--only", "reference", "--reuse", str(path)])
    with pytest.raises(SystemExit, match="scored other clips"):  # rows of 2 clips do not stand for 1
        script.main([*command[2:], "--clips", "1", "--only", "reference", "--reuse", str(path)])
    # the record names what its numbers can depend on beyond the commit: the scored clips' content, the CPU and
    # the library versions; rows scored on other renderings of the same clip keys are never reused
    clips = script.heldout_clips(heldout, {"frames": 17, "fps": 23})[:2]
    assert report["heldout_sha256"] == script.clips_sha256(clips)
    assert torch.__version__.startswith(report["environment"]["packages"]["torch"])
    redrawn = tmp_path / "redrawn.json"
    redrawn.write_text(json.dumps({**report, "heldout_sha256": "0" * 64}))
    with pytest.raises(SystemExit, match="other renderings of the held-out clips"):
        script.main([*command[2:], "--only", "reference", "--reuse", str(redrawn)])
    # the paper's ablation: a model trained WITHOUT the face conditioner gets its own row and the identity check
    from fantasytalking.training import StageTwoLipRefiner, export_conditioning
    from fantasytalking.training.presets import DEMO_MOTION

    no_face = StageTwoLipRefiner(backbone={"preset": "demo", "seed": 0}, face=None, motion=dict(DEMO_MOTION),
                                 trainable={"mode": "full"}, seed=1)  # fmt: skip
    export_conditioning(no_face, tmp_path / "no-face.safetensors")
    from fantasytalking.conditioning import FaceConditioner

    embedded: list[np.ndarray] = []  # what the face conditioner embeds in the drift rows: the TRUE portraits
    embed = FaceConditioner.embed
    monkeypatch.setattr(FaceConditioner, "embed", lambda self, rgb, lm: (embedded.append(rgb), embed(self, rgb, lm))[1])
    assert script.main([*command[2:], "--only", "ablation", "drift", "--reuse", str(path),
                        "--ablation", str(tmp_path / "no-face.safetensors")]) == 0  # fmt: skip
    portraits = [c["image"] for c in script.heldout_clips(heldout, {"frames": 17, "fps": 23})]
    assert len(embedded) == 2 * len(portraits)  # full and face off; the ablation has no face conditioner
    assert all(any(np.array_equal(e, p) for p in portraits) for e in embedded)
    monkeypatch.undo()
    (ablation_path,) = set((tmp_path / "res").glob("demo-targets-*.json")) - {path, merged_path}
    ablated = json.loads(ablation_path.read_text())
    ablation_row = next(r for r in ablated["rows"] if r["name"] == script.ABLATION_ROW)
    assert ablation_row["identity_error"] is not None and ablated["ablation_sha256"]
    assert ablated["checks"]["identity error: full < trained without face"] == (
        by["full model, own speech"]["identity_error"] < ablation_row["identity_error"])  # fmt: skip
    drifted = {r["name"]: r for r in ablated["rows"] if "drifted" in r["name"]}
    assert set(drifted) == {*drift_rows, script.DRIFT_ABLATION_ROW}
    assert ablated["checks"]["drifted reference: identity error full < trained without face"] == (
        drifted[drift_rows[0]]["identity_error"] < drifted[script.DRIFT_ABLATION_ROW]["identity_error"])  # fmt: skip
    # the ablation's rows stand only beside the ablation they were measured with
    export_conditioning(StageTwoLipRefiner(backbone={"preset": "demo", "seed": 0}, face=None, motion=dict(DEMO_MOTION),
                                           trainable={"mode": "full"}, seed=2), tmp_path / "other-no-face.safetensors")
    with pytest.raises(SystemExit, match="was measured with --ablation"):
        script.main([*command[2:], "--only", "reference", "--reuse", str(ablation_path),
                     "--ablation", str(tmp_path / "other-no-face.safetensors")])  # fmt: skip
    assert script.main([*command[2:], "--only", "reference", "--reuse", str(ablation_path)]) == 0  # no --ablation
    (plain_path,) = set((tmp_path / "res").glob("demo-targets-*.json")) - {path, merged_path, ablation_path}
    plain = [r["name"] for r in json.loads(plain_path.read_text())["rows"]]
    assert script.ABLATION_ROW not in plain and script.DRIFT_ABLATION_ROW not in plain and drift_rows[0] in plain
    # --reuse takes several records of one model (rows measured on different days): each row from the record that
    # holds it, stamped with that record; the ablation is recognised by its bytes wherever the file lies now
    part_a, part_b = tmp_path / "part-a.json", tmp_path / "part-b.json"
    half = len(ablated["rows"]) // 2
    part_a.write_text(json.dumps({**ablated, "rows": ablated["rows"][:half]}))
    part_b.write_text(json.dumps({**ablated, "rows": ablated["rows"][half:]}))
    moved = tmp_path / "moved" / "no-face.safetensors"
    moved.parent.mkdir()
    shutil.copy(tmp_path / "no-face.safetensors", moved)
    before = set((tmp_path / "res").glob("demo-targets-*.json"))
    assert script.main([*command[2:], "--only", "reference", "--reuse", str(part_a), str(part_b),
                        "--ablation", str(moved)]) == 0  # fmt: skip
    (joined_path,) = set((tmp_path / "res").glob("demo-targets-*.json")) - before
    joined = json.loads(joined_path.read_text())
    assert [r["name"] for r in joined["rows"]] == [r["name"] for r in ablated["rows"]]
    assert joined["checks"] == ablated["checks"]
    origin = {r["name"]: r["measured"].get("record") for r in joined["rows"] if r["name"] != reference["name"]}
    expected = {r["name"]: r.get("measured", {}).get("record", "part-a.json" if i < half else "part-b.json")
                for i, r in enumerate(ablated["rows"]) if r["name"] != reference["name"]}  # fmt: skip
    assert origin == expected and {"part-a.json", "part-b.json"} <= set(origin.values())
    assert "part-a.json" in joined_path.with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match="is in both --reuse"):  # a row two records hold is refused, not picked
        script.main([*command[2:], "--only", "reference", "--reuse", str(part_a), str(ablation_path)])
    # another file at the path the ablation rows were measured with is another ablation: refused by its bytes
    shutil.copy(tmp_path / "other-no-face.safetensors", moved)
    with pytest.raises(SystemExit, match="was measured with --ablation"):
        script.main([*command[2:], "--only", "reference", "--reuse", str(part_a), str(part_b), "--ablation", str(moved)])
    with pytest.raises(SystemExit, match="has a face conditioner"):  # the full model is no ablation
        script.main([*command[2:], "--only", "ablation", "--ablation", str(demo / "model.safetensors")])
    # every row decodes through the VAE: the record names it, and rows of another VAE are never reused
    assert report["vae"] == str(demo / "vae") and report["vae_sha256"] == script.vae_sha256(demo / "vae")
    from diffusers import AutoencoderKLWan

    other = AutoencoderKLWan.from_pretrained(str(demo / "vae"))
    with torch.no_grad():
        other.decoder.conv_out.bias.add_(0.1)
    other.save_pretrained(str(tmp_path / "other-vae"))
    with pytest.raises(SystemExit, match="another VAE"):
        script.main([*command[2:], "--vae", str(tmp_path / "other-vae"), "--only", "reference", "--reuse", str(path)])


def test_demo_targets_knows_a_stage_one_export_by_its_git_blob_in_records_without_its_sha256():
    """Records before stage1_sha256 name the file and their commit: the file's git blob then and now decides."""
    import argparse

    script = load_script("demo_targets")
    from fantasytalking.demo import DEMO_DIR

    stage1 = DEMO_DIR / "stage1.safetensors"
    args = argparse.Namespace(stage1=stage1)
    assert script.same_stage1({"stage1": str(stage1), "commit": "HEAD"}, args)  # the committed file, unchanged
    assert script.same_stage1({"stage1_sha256": script.file_sha256(stage1)}, args)
    assert not script.same_stage1({"stage1_sha256": "0" * 64, "stage1": str(stage1), "commit": "HEAD"}, args)
    assert not script.same_stage1({"stage1": str(stage1), "commit": "0" * 40}, args)  # no such commit
    assert not script.same_stage1({"stage1": "elsewhere/other.safetensors", "commit": "HEAD"}, args)
    assert not script.same_stage1({"stage1": None, "commit": "HEAD"}, args)


def test_demo_targets_drifted_reference_is_a_seeded_colour_shift():
    """The drifted first frame: the same for a clip in every run, another for another clip, a colour change only."""
    script = load_script("demo_targets")
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a, b = (script.drifted_reference(image, 0.15, "clip-0") for _ in range(2))
    other = script.drifted_reference(image, 0.15, "clip-1")
    assert a.dtype == np.uint8 and a.shape == image.shape
    assert np.array_equal(a, b) and not np.array_equal(a, other) and not np.array_equal(a, image)
    assert np.array_equal(script.drifted_reference(image, 0.0, "clip-0"), image)  # no drift: the portrait itself
    # a per-channel gain and offset: each channel stays an affine map of the original (where nothing is clipped)
    for ch in range(3):
        x, y = image[..., ch].ravel().astype(float), a[..., ch].ravel().astype(float)
        inside = (y > 0) & (y < 255)
        assert np.corrcoef(x[inside], y[inside])[0, 1] > 0.999


def test_demo_targets_control_sentence_is_the_least_correlated_clip():
    """The another-sentence row gives each clip the held-out sentence whose truth correlates least with its own."""
    t = np.linspace(0, 2 * np.pi, 40)
    clip = {"key": "a", "truth_open": np.sin(t)}
    pool = [clip, {"key": "same", "truth_open": 0.5 * np.sin(t)}, {"key": "anti", "truth_open": -np.sin(t)},
            {"key": "orthogonal", "truth_open": np.cos(t)}]  # fmt: skip
    script = load_script("demo_targets")
    assert script.control_sentences([clip], pool)["a"]["key"] == "orthogonal"  # |r| = 1 for both the others
    with pytest.raises(SystemExit, match="at least two"):
        script.control_sentences([clip], [clip])


def test_demo_targets_title_names_the_split_it_scored(tmp_path):
    """A record names the split it scored in its title: the held-out split, training clips, or not recorded."""
    script = load_script("demo_targets")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "synthtalk.json").write_text(json.dumps({"split": "train"}))
    (tmp_path / "heldout").mkdir()
    (tmp_path / "heldout" / "synthtalk.json").write_text(json.dumps({"split": "heldout"}))
    assert "train clips" in script.shards_name(tmp_path / "train")
    assert script.shards_name(tmp_path / "heldout") == "the SynthTalk held-out split"
    assert "split not recorded" in script.shards_name(tmp_path / "missing")
    assert script.shards_name(tmp_path / "missing", "heldout") == "the SynthTalk held-out split"  # the record's
    assert script.shards_split(tmp_path / "train") == "train" and script.shards_split(tmp_path / "missing") is None


def test_demo_targets_gives_lip_sync_per_identity():
    """Clips of one SynthTalk identity pass or fail together (the targets' split: 32 clips, 8 identities, one of
    which scores 0.11): the record gives the rows that should follow their speech per identity, and the mean over
    identities, each counted once; rows of other kinds, clips without an identity and one-identity rows add nothing."""
    script = load_script("demo_targets")

    def clip(key, who, lipsync):
        return {"key": key, "identity": who, "lipsync": lipsync}

    own = {"name": "full model, own speech", "per_clip": [
        clip("c0", "heldout-1-1", 0.8), clip("c1", "heldout-1-0", 0.7), clip("c2", "heldout-1-1", 0.6),
        clip("c3", "heldout-1-0", None), clip("c4", None, 0.9), clip("c5", "heldout-1-2", 0.1)]}  # fmt: skip
    assert script.by_identity(own["per_clip"]) == [("heldout-1-0", 0.7, 1), ("heldout-1-1", pytest.approx(0.7), 2),
                                                   ("heldout-1-2", 0.1, 1)]  # fmt: skip
    silence = {"name": "full model, silence", "per_clip": own["per_clip"]}
    alone = {"name": script.STAGE1_ROW, "per_clip": [clip("c0", "heldout-1-1", 0.2), clip("c1", "heldout-1-1", 0.4)]}
    old = {"name": script.ABLATION_ROW, "per_clip": [{"key": "c0", "lipsync": 0.5}]}  # a record before identities
    lines = script.identity_lines({"rows": [own, silence, alone, old]})
    assert lines == ["Lip sync by identity, full model, own speech: heldout-1-0 0.70 (1), heldout-1-1 0.70 (2), "
                     "heldout-1-2 0.10 (1); mean over the 3 identities 0.500."]  # fmt: skip


def test_demo_targets_paired_evidence(tmp_path, capsys):
    """Each comparative target gets the clip-by-clip difference of its two rows, with a t interval: a difference
    of means that the clips' spread swamps is 'within noise', a consistent one is resolved."""
    script = load_script("demo_targets")

    def row(name, values, measure="identity_error"):
        return {"name": name, "per_clip": [{"key": f"c{i}", measure: v} for i, v in enumerate(values)]}

    full = row("full model, own speech", [0.05, 0.15, 0.06, 0.09])
    consistent = row(script.FACE_OFF_ROW, [0.06, 0.16, 0.07, 0.10])  # 0.01 higher on every clip
    noisy = row(script.ABLATION_ROW, [0.07, 0.14, 0.07, 0.08])  # +0.02, -0.01, +0.01, -0.01: mean +0.0025
    ev = script.paired_evidence({r["name"]: r for r in (full, consistent, noisy)})
    assert set(ev) == {"identity error: with face < without", "identity error: full < trained without face"}
    on_off = ev["identity error: with face < without"]
    assert on_off["mean"] == pytest.approx(0.01) and on_off["positive_clips"] == 4 and on_off["resolved"]
    assert on_off["interval"][0] == pytest.approx(0.01) and on_off["clips"] == 4  # no spread: a zero-width interval
    assert "decided FOR the target" in script.evidence_text(on_off)
    against = script.paired_difference(consistent, full, "identity_error")  # the rows swapped
    assert against["resolved"] and "decided AGAINST the target" in script.evidence_text(against)
    ablation = ev["identity error: full < trained without face"]
    assert ablation["mean"] == pytest.approx(0.0025) and ablation["positive_clips"] == 2
    assert not ablation["resolved"] and ablation["interval"][0] < 0 < ablation["interval"][1]
    assert "within noise" in script.evidence_text(ablation) and "2 of 4 clips" in script.evidence_text(ablation)
    # clips are paired by key (rows may list them in another order); fewer than 2 shared clips give no evidence
    shuffled = {**consistent, "per_clip": consistent["per_clip"][::-1]}
    assert script.paired_difference(full, shuffled, "identity_error")["mean"] == pytest.approx(0.01)
    assert script.paired_difference(full, row("x", [0.2]), "identity_error") is None
    # --compare: two rows of two records (e.g. two training seeds), paired the same way; nothing is written
    header = {"generation": {"num_inference_steps": 20}, "vae_sha256": "v", "heldout": "h"}
    (tmp_path / "a.json").write_text(json.dumps({**header, "rows": [full]}))
    (tmp_path / "b.json").write_text(json.dumps({**header, "rows": [consistent]}))
    assert script.main(["--compare", f"{tmp_path}/a.json#{full['name']}", f"{tmp_path}/b.json#{consistent['name']}"]) == 0
    out = capsys.readouterr().out  # no target names a direction here: the verdict says which row is higher
    assert "+0.0100" in out and "decided: the second row is higher" in out and "target" not in out.split(": ", 2)[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]
    with pytest.raises(SystemExit, match="has no row 'nope'"):
        script.main(["--compare", f"{tmp_path}/a.json#nope", f"{tmp_path}/b.json#{consistent['name']}"])
    # '+' pools rows clip by clip (e.g. two training seeds of each recipe): mean(full, noisy) - mean(consistent)
    (tmp_path / "c.json").write_text(json.dumps({**header, "rows": [noisy]}))
    a, b, c = (f"{tmp_path}/{n}.json#{r['name']}" for n, r in (("a", full), ("b", consistent), ("c", noisy)))
    assert script.main(["--compare", b, f"{a}+{c}"]) == 0  # pooled [0.06, 0.145, 0.065, 0.085] - consistent
    out = capsys.readouterr().out  # differences 0, -0.015, -0.005, -0.015: mean -0.00875
    assert re.search(r": -0\.008[78] \(", out) and "within noise" in out
    pooled = script.mean_row([full, noisy], "identity_error", "pooled")
    assert [c["identity_error"] for c in pooled["per_clip"]] == pytest.approx([0.06, 0.145, 0.065, 0.085])
    assert script.mean_row([full, row("x", [None, 0.1, 0.1, 0.1])], "identity_error", "p")["per_clip"][0]["identity_error"] is None
    with pytest.raises(SystemExit, match="other clips"):  # a pooled row must score the same clips as the rest
        (tmp_path / "d.json").write_text(json.dumps({**header, "rows": [row(script.ABLATION_ROW, [0.1, 0.1])]}))
        script.main(["--compare", b, f"{a}+{tmp_path}/d.json#{script.ABLATION_ROW}"])
    (tmp_path / "b.json").write_text(json.dumps({**header, "heldout": "other", "rows": [consistent]}))
    with pytest.raises(SystemExit, match="measured the same way"):
        script.main(["--compare", f"{tmp_path}/a.json#{full['name']}", f"{tmp_path}/b.json#{consistent['name']}"])
    # lip sync: stage one is the LOWER row, the full model the higher
    stage1 = row(script.STAGE1_ROW, [0.0, 0.1, -0.1, 0.05], "lipsync")
    lips = row("full model, own speech", [0.7, 0.6, 0.8, 0.65], "lipsync")
    ev = script.paired_evidence({r["name"]: r for r in (stage1, lips)})
    assert ev["stage one < stage one + two"]["mean"] == pytest.approx(0.675) and ev["stage one < stage one + two"]["resolved"]


def test_demo_targets_against_judges_a_candidate_by_the_ship_rule(tmp_path, capsys):
    """--against SHIPPED CANDIDATE: (a) the checks but identity that hold for the shipped model must hold, (b) no
    paired difference on the shipped rows may be decided in the worse direction (on silence and another sentence
    a HIGHER lip sync is worse), (c) a check the shipped model passes decided must be passed decided; exit 1 if
    it does not ship, and records of two renderings, or without the rule's rows, are refused."""
    script = load_script("demo_targets")
    base = {"lipsync": [0.6, 0.7, 0.5, 0.65], "closed_in_long_silence": [0.9, 1.0, 0.95, 0.97],
            "identity_error": [0.10, 0.09, 0.11, 0.10]}  # fmt: skip

    def rows(**shift):  # every SHIPPED_ROWS row; shift = {row name: {measure: per-clip offsets}}
        out = []
        for name in script.SHIPPED_ROWS:
            per_clip = []
            for i in range(4):
                per_clip.append({"key": f"c{i}", **{m: v[i] + shift.get(name, {}).get(m, [0.0] * 4)[i]
                                                     for m, v in base.items()}})  # fmt: skip
            out.append({"name": name, "per_clip": per_clip})
        return out

    decided = {"mean": 0.001, "interval": [0.0002, 0.0018], "resolved": True, "positive_clips": 4, "clips": 4,
               "confidence": 0.95}  # fmt: skip
    noise = {**decided, "interval": [-0.0005, 0.0025], "resolved": False}
    drift = "drifted reference: identity error with face < without"
    checks = {"lipsync >= 0.6": True, "silence <= 0.15": True, "identity error: with face < without": True,
              drift: True}  # fmt: skip
    header = {"generation": {"num_inference_steps": 20}, "vae_sha256": "v", "heldout": "h", "heldout_sha256": "s"}

    def judge(candidate, shipped=None):
        shipped = shipped or {**header, "checks": checks, "evidence": {drift: decided}, "rows": rows()}
        (tmp_path / "shipped.json").write_text(json.dumps(shipped))
        (tmp_path / "cand.json").write_text(json.dumps(candidate))
        code = script.main(["--against", str(tmp_path / "shipped.json"), str(tmp_path / "cand.json")])
        return code, capsys.readouterr().out

    same = {**header, "checks": checks, "evidence": {drift: decided}, "rows": rows()}
    code, out = judge(same)
    assert code == 0 and out.strip().endswith("ships") and "FAIL" not in out
    assert out.count("  ok   ") == 2 + len(script.SHIPPED_ROWS) * 3 + 1  # (a) 2 checks (no identity), (b), (c) 1
    # an identity check the candidate fails by its point estimate is not demanded (the shipped model's is noise)
    code, out = judge({**same, "checks": {**checks, "identity error: with face < without": False}})
    assert code == 0
    # (a): a threshold target that holds for the shipped model fails for the candidate
    code, out = judge({**same, "checks": {**checks, "silence <= 0.15": False}})
    assert code == 1 and "FAIL silence <= 0.15: fails" in out and out.strip().endswith("does not ship")
    # (b): identity error 0.01 higher on every clip of own speech: decided against the candidate
    worse = {script.OWN_ROW: {"identity_error": [0.01, 0.01, 0.012, 0.011]}}
    code, out = judge({**same, "rows": rows(**worse)})
    assert code == 1 and f"FAIL {script.OWN_ROW}: identity_error: +0.01" in out
    # on silence, lip sync decided LOWER is better, decided HIGHER is worse
    better = {"full model, silence": {"lipsync": [-0.1, -0.12, -0.1, -0.11]}}
    assert judge({**same, "rows": rows(**better)})[0] == 0
    code, out = judge({**same, "rows": rows(**{"full model, silence": {"lipsync": [0.1, 0.12, 0.1, 0.11]}})})
    assert code == 1 and "FAIL full model, silence: lipsync" in out
    # (c): the drifted-reference check the shipped model passes decided is within noise for the candidate
    code, out = judge({**same, "evidence": {drift: noise}})
    assert code == 1 and f"FAIL {drift}: +0.0010" in out and "within noise" in out
    code, out = judge({**same, "evidence": {}})
    assert code == 1 and f"FAIL {drift}: not measured" in out
    # refused: another rendering, a record without heldout_sha256, a missing row, a file that is no record
    with pytest.raises(SystemExit, match="differ in heldout_sha256"):
        judge({**same, "heldout_sha256": "other"})
    with pytest.raises(SystemExit, match="without heldout_sha256"):
        judge({k: v for k, v in same.items() if k != "heldout_sha256"})
    with pytest.raises(SystemExit, match="with their checks"):
        judge({k: v for k, v in same.items() if k != "checks"})
    with pytest.raises(SystemExit, match=r"missing: motion 1\.0"):
        judge({**same, "rows": rows()[:-1]})
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match="not a demo_targets record"):
        script.main(["--against", str(tmp_path / "bad.json"), str(tmp_path / "cand.json")])


def test_demo_targets_checks_cover_the_rows_there_are():
    script = load_script("demo_targets")
    own = {"lipsync": 0.7, "closed_in_long_silence": 0.95, "identity_error": 0.1}
    rows = {"full model, own speech": own, "motion 0.1": {"head_motion": 0.01}, "motion 0.5": {"head_motion": 0.02},
            "motion 1.0": {"head_motion": 0.02}, "full model, another sentence": {"lipsync": 0.1}}  # fmt: skip
    checks = script.target_checks(rows)
    assert checks["lipsync >= 0.6"] and checks["another sentence <= 0.15"]
    assert checks["motion 0.1 < 0.5 < 1.0"] is False  # strictly increasing, not equal
    assert "silence <= 0.15" not in checks and "stage one < stage one + two" not in checks
    assert script.target_checks({}) == {}
    with_ablation = {**rows, script.ABLATION_ROW: {"identity_error": 0.12}}
    assert script.target_checks(with_ablation)["identity error: full < trained without face"] is True
    with_ablation[script.ABLATION_ROW] = {"identity_error": 0.1}
    assert script.target_checks(with_ablation)["identity error: full < trained without face"] is False  # ties fail
    motion_only = {f"motion {level}": {"head_motion": value} for level, value in zip((0.1, 0.5, 1.0), (1, 2, 3))}
    assert script.target_checks(motion_only) == {"motion 0.1 < 0.5 < 1.0": True}  # no own-speech row needed


def test_bench_demo_times_the_demo_command(tmp_path):
    """benchmarks/bench_demo.py runs `fantasytalking demo` in a fresh process and records its wall time."""
    import soundfile as sf

    from fantasytalking.demo import demo_inputs
    from fantasytalking.testing import make_random_demo

    demo = make_random_demo(tmp_path / "demo")
    speech, rate = sf.read(str(demo_inputs(demo)[1]), dtype="float32")
    sf.write(tmp_path / "second.wav", speech[:rate], rate)  # 1 s: the test times the path, not the demo
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_demo.py"), "--demo-dir", str(demo), "--steps", "1",
               "--audio", str(tmp_path / "second.wav"), "--repeats", "1", "--out", str(tmp_path / "res")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = (tmp_path / "res").glob("bench_demo-*.json")
    record = json.loads(path.read_text())
    (run,) = record["runs"]
    assert run["wall_s"] > 0 and run["frames"] > 1 and run["mp4_bytes"] > 0
    assert record["budget_s"] == 120 and record["speech_s"] == pytest.approx(1.0) and record["commit"]
    digest = hashlib.sha256((demo / "model.safetensors").read_bytes()).hexdigest()
    assert record["model_sha256"] == digest  # which model was timed


def test_records_are_never_overwritten(tmp_path):
    """Every benchmark names a new record with benchmarks/variants.py's new_record_stem: -2, -3... on a clash."""
    new_record_stem = load_script("variants").new_record_stem
    first = new_record_stem(tmp_path / "res", "bench_demo-2026-12-02")
    assert first == tmp_path / "res" / "bench_demo-2026-12-02" and first.parent.is_dir()
    first.with_suffix(".json").write_text("{}")
    second = new_record_stem(tmp_path / "res", "bench_demo-2026-12-02")
    assert second.name == "bench_demo-2026-12-02-2"
    second.with_suffix(".md").write_text("")  # either file of a record claims its name
    assert new_record_stem(tmp_path / "res", "bench_demo-2026-12-02").name == "bench_demo-2026-12-02-3"


def test_package_demo_adds_heldout_scores_to_a_packaged_card(tmp_path, monkeypatch):
    """examples/package_demo.py --update-card: the targets of a packaged model land in its card, per-clip values
    left in the record; the rest of the card is kept."""
    module = load_example("package_demo")
    monkeypatch.setattr(module, "ASSETS", tmp_path)
    (tmp_path / "card.json").write_text(json.dumps({"seed": 3, "clip_frames": 17,
                                                    "generation": {"audio_cfg": 1.0, "num_inference_steps": 20}}))
    targets = tmp_path / "demo-targets-2026-12-01.json"
    targets.write_text(json.dumps({
        "date": "2026-12-01", "commit": "abc1234", "checks": {"lipsync >= 0.6": False}, "generation": {"audio_cfg": 2.5, "segment_frames": 0, "seed": 0},
        "rows": [{"name": "full model, own speech", "lipsync": 0.08, "per_clip": [{"lipsync": 0.1}]}],
    }))  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["package_demo.py", "--update-card", "--targets", str(targets)])
    assert module.main() == 0
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["seed"] == 3 and card["clip_frames"] == 17
    scores = card["heldout_scores"]
    assert scores["checks"] == {"lipsync >= 0.6": False} and scores["commit"] == "abc1234"
    assert scores["rows"] == [{"name": "full model, own speech", "lipsync": 0.08}]
    assert scores["record"] == "benchmarks/results/demo-targets-2026-12-01.json"
    # the demo then generates with the settings it was measured with (the noise seed is not a card setting)
    assert card["generation"] == {"audio_cfg": 2.5, "num_inference_steps": 20, "segment_frames": 0}
    assert scores["motion_gain"] == 1.0  # a record from before the motion gain: its rows were measured at 1
    # a record of motion rows at another gain: the demo then generates with that gain
    targets.write_text(json.dumps({**json.loads(targets.read_text()), "motion_gain": 6.0}))
    monkeypatch.setattr(sys, "argv", ["package_demo.py", "--update-card", "--targets", str(targets)])
    assert module.main() == 0
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["generation"]["motion_gain"] == 6.0 == card["heldout_scores"]["motion_gain"]
    monkeypatch.setattr(sys, "argv", ["package_demo.py", "--update-card"])
    with pytest.raises(SystemExit):
        module.main()


def _packaging_sandbox(tmp_path, monkeypatch, card: dict, data: dict, targets_name: str):
    """package_demo.py with its package and curve folders in tmp_path: the module, a random demo, those folders,
    shards whose synthtalk.json is ``data`` and an empty targets record named ``targets_name``."""
    from fantasytalking.testing import make_random_demo

    module = load_example("package_demo")
    demo = make_random_demo(tmp_path / "demo")
    assets, curves = tmp_path / "assets", tmp_path / "curves"
    assets.mkdir()
    monkeypatch.setattr(module, "ASSETS", assets)
    monkeypatch.setattr(module, "CURVES", curves)
    (assets / "card.json").write_text(json.dumps(card))
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "synthtalk.json").write_text(json.dumps(data))
    targets = tmp_path / targets_name
    targets.write_text(json.dumps({"date": "2026-12-04", "commit": "abc", "checks": {}, "generation": {},
                                   "rows": []}))  # fmt: skip
    return module, demo, assets, curves, shards, targets


def test_package_demo_ships_the_measured_files_with_the_motion_request_scale(tmp_path, monkeypatch):
    """examples/package_demo.py --motion-stats: the packaged model becomes, byte for byte, the file the record was
    measured on, once it is checked to be the packaged one with the scale fitted to stats.json; a record of another
    file is refused and nothing changes."""
    import hashlib

    from fantasytalking.training.export import read_export_config, with_motion_request_scale

    module, demo, assets, _, _, targets = _packaging_sandbox(tmp_path, monkeypatch, {"seed": 0}, {},
                                                             "demo-targets-2026-12-06-15.json")  # fmt: skip
    shutil.copyfile(demo / "model.safetensors", assets / "model.safetensors")
    raw = {n: {"p1": 0.0, "p99": 1.0, "quantiles": [0.0, 0.01, 0.04, 0.25, 1.0]} for n in ("face", "body")}
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps(raw))
    other = {n: {**v, "quantiles": [0.0, 0.1, 0.2, 0.3, 1.0]} for n, v in raw.items()}
    measured, wrong = tmp_path / "measured.safetensors", tmp_path / "wrong.safetensors"
    table = with_motion_request_scale(demo / "model.safetensors", raw, measured)
    with_motion_request_scale(demo / "model.safetensors", other, wrong)
    record = json.loads(targets.read_text())
    monkeypatch.setattr(sys, "argv", ["package_demo.py", "--motion-stats", str(stats), "--targets", str(targets)])
    before = (assets / "model.safetensors").read_bytes()
    for path, match in ((wrong, "is not the packaged model.safetensors with the request scale"),
                        (measured, "changed since")):  # fmt: skip
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path == wrong else "0" * 64
        targets.write_text(json.dumps({**record, "model": str(path), "model_sha256": digest}))
        with pytest.raises(SystemExit, match=match):
            module.main()
        assert (assets / "model.safetensors").read_bytes() == before
        assert sorted(p.name for p in assets.iterdir()) == ["card.json", "model.safetensors"]  # no temporary left
    digest = hashlib.sha256(measured.read_bytes()).hexdigest()
    targets.write_text(json.dumps({**record, "model": str(measured), "model_sha256": digest}))
    assert module.main() == 0
    assert (assets / "model.safetensors").read_bytes() == measured.read_bytes()
    assert read_export_config(assets / "model.safetensors")["conditioners"]["motion"]["request_scale"] == table
    card = json.loads((assets / "card.json").read_text())
    assert card["motion_request_scale"]["median_request_labels"] == pytest.approx([0.04, 0.04])
    assert card["motion_request_scale"]["levels"] == 5 and card["heldout_scores"]["commit"] == "abc"


def test_package_demo_packages_a_continued_stage_two(tmp_path, monkeypatch):
    """examples/package_demo.py --continued: the continuation's export becomes the model (float16), its curve is
    kept under a new name, the card records it under `continued` and keeps the rest; a missing export is refused."""
    from safetensors.torch import load_file

    module, demo, assets, curves, shards, targets = _packaging_sandbox(
        tmp_path, monkeypatch, {"seed": 0, "losses": {"stage2": {"steps": 1800}}},
        {"clips": 4, "num_frames": 17, "pause_share": 0.25}, "demo-targets-2026-12-02-3.json")
    run = tmp_path / "run"
    (run / "lightning_logs" / "version_0").mkdir(parents=True)
    (run / "lightning_logs" / "version_0" / "hparams.yaml").write_text("{}\n")
    (run / "lightning_logs" / "version_0" / "metrics.csv").write_text("step,train/loss\n9,0.2\n19,0.1\n")
    argv = ["package_demo.py", "--continued", str(run), "--continued-shards", str(shards), "--targets", str(targets)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match="did not finish"):
        module.main()
    (run / "conditioning.safetensors").write_bytes((demo / "model.safetensors").read_bytes())
    assert module.main() == 0
    card = json.loads((assets / "card.json").read_text())
    (continued,) = card["continued"]
    assert continued["data"]["pause_share"] == 0.25 and continued["losses"]["steps"] == 20
    assert card["losses"] == {"stage2": {"steps": 1800}} and card["heldout_scores"]["commit"] == "abc"
    assert (curves / "stage2-continued-1.csv").read_text().splitlines() == ["step,loss", "9,0.2", "19,0.1"]
    packaged, source = load_file(str(assets / "model.safetensors")), load_file(str(demo / "model.safetensors"))
    assert packaged.keys() == source.keys()
    assert all(v.dtype != torch.float32 for v in packaged.values() if v.is_floating_point())


def test_package_demo_packages_a_rerun_of_both_stages(tmp_path, monkeypatch):
    """examples/package_demo.py --stages: both exports replace the packaged models (float16), the curves are kept
    under the run's name, the card takes the run's data and losses, keeps the VAE and summarises the old model."""
    from safetensors.torch import load_file

    old_card = {"seed": 0, "command": "old", "vae": {"what": "the VAE"}, "wall_time_s": {"vae": 100, "stage1": 5},
                "losses": {"vae": {"steps": 400}, "stage2": {"steps": 1800}}, "continued": [{"command": "c"}]}  # fmt: skip
    module, demo, assets, curves, shards, targets = _packaging_sandbox(
        tmp_path, monkeypatch, old_card, {"clips": 4, "num_frames": 17, "size": 96, "identities": 4},
        "demo-targets-2026-12-04-3.json")
    run = tmp_path / "joint"
    for name, rows in (("stage1", "9,0.5\n19,0.3\n"), ("stage2", "9,0.2\n19,0.1\n29,0.05\n")):
        logs = run / name / "lightning_logs" / "version_0"
        logs.mkdir(parents=True)
        (logs / "hparams.yaml").write_text("{}\n")
        (logs / "metrics.csv").write_text("step,train/loss\n" + rows)
    argv = ["package_demo.py", "--stages", str(run), "--stages-shards", str(shards), "--targets", str(targets)]
    monkeypatch.setattr(sys, "argv", argv)
    (run / "stage2" / "conditioning.safetensors").write_bytes((demo / "model.safetensors").read_bytes())
    with pytest.raises(SystemExit, match="did not finish"):  # stage one's export is missing
        module.main()
    assert not (assets / "model.safetensors").exists()  # nothing packaged from a half run
    (run / "stage1" / "conditioning.safetensors").write_bytes((demo / "model.safetensors").read_bytes())
    assert module.main() == 0
    card = json.loads((assets / "card.json").read_text())
    assert card["data"]["identities"] == 4 and card["losses"]["stage2"]["steps"] == 30
    assert card["losses"]["vae"] == {"steps": 400} and card["vae"] == {"what": "the VAE"}
    assert card["wall_time_s"]["vae"] == 100 and "continued" not in card
    assert card["previous"]["command"] == "old" and card["previous"]["continued"] == [{"command": "c"}]
    assert card["heldout_scores"]["commit"] == "abc"
    assert (curves / "stage2-joint.csv").read_text().splitlines() == ["step,loss", "9,0.2", "19,0.1", "29,0.05"]
    for name in ("model", "stage1"):
        packaged = load_file(str(assets / f"{name}.safetensors"))
        assert all(v.dtype == torch.float16 for v in packaged.values() if v.is_floating_point())


def test_package_demo_packages_a_decoder_fine_tune_and_refuses_a_changed_encoder(tmp_path, monkeypatch):
    """examples/package_demo.py --decoder: a VAE whose encoder side is the packaged one's bit for bit replaces vae/
    and is recorded under vae.decoder_finetune; a changed encoder or latent statistics is refused, vae/ untouched."""
    import shutil

    from diffusers import AutoencoderKLWan

    module, demo, assets, curves, shards, targets = _packaging_sandbox(
        tmp_path, monkeypatch, {"seed": 0, "vae": {"command": "step 2b"}}, {"clips": 4, "num_frames": 17, "seed": 0},
        "demo-targets-2026-12-04.json")
    shutil.copytree(demo / "vae", assets / "vae")

    def run_with(change: str, name: str) -> Path:
        vae = AutoencoderKLWan.from_pretrained(str(demo / "vae"))
        with torch.no_grad():
            dict(vae.named_parameters())[change].add_(0.5)
        run = tmp_path / name
        vae.save_pretrained(str(run))
        logs = run / "train" / "lightning_logs" / "version_0"
        logs.mkdir(parents=True)
        (logs / "hparams.yaml").write_text("{}\n")
        (logs / "metrics.csv").write_text("step,train/loss\n9,0.3\n19,0.2\n")
        (run / "train" / "heldout.csv").write_text("step,psnr,mouth_r,mouth_ratio\n25,21.0,0.99,1.0\n")
        return run

    before = (assets / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    encoder_key = next(k for k, _ in AutoencoderKLWan.from_pretrained(str(demo / "vae")).named_parameters()
                       if k.startswith("encoder."))  # fmt: skip
    bad = run_with(encoder_key, "bad")
    monkeypatch.setattr(sys, "argv", ["package_demo.py", "--decoder", str(bad), "--decoder-shards", str(shards),
                                      "--targets", str(targets)])  # fmt: skip
    with pytest.raises(SystemExit, match="changed the encoder"):
        module.main()
    assert (assets / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == before
    good = run_with("decoder.conv_out.weight", "good")
    monkeypatch.setattr(sys, "argv", ["package_demo.py", "--decoder", str(good), "--decoder-shards", str(shards),
                                      "--targets", str(targets)])  # fmt: skip
    assert module.main() == 0
    packaged = AutoencoderKLWan.from_pretrained(str(assets / "vae")).state_dict()
    tuned = AutoencoderKLWan.from_pretrained(str(good)).state_dict()
    assert all(torch.equal(packaged[k], tuned[k]) for k in tuned) and not (assets / "vae" / "train").exists()
    card = json.loads((assets / "card.json").read_text())
    record = card["vae"]["decoder_finetune"]
    assert card["vae"]["command"] == "step 2b" and record["losses"]["steps"] == 20
    assert record["heldout_scores"] == [{"step": 25.0, "psnr": 21.0, "mouth_r": 0.99, "mouth_ratio": 1.0}]
    assert (curves / "vae-decoder.csv").read_text().splitlines() == ["step,loss", "9,0.3", "19,0.2"]
    assert card["heldout_scores"]["commit"] == "abc"
    # a run kept in the repository has no file times of its own (git keeps none): its measured wall time is given
    monkeypatch.setattr(sys, "argv", ["package_demo.py", "--decoder", str(good), "--decoder-shards", str(shards),
                                      "--targets", str(targets), "--wall", '{"decoder": 1097}'])  # fmt: skip
    assert module.main() == 0
    assert json.loads((assets / "card.json").read_text())["vae"]["decoder_finetune"]["wall_time_s"] == 1097.0


def test_vae_floor_splits_the_identity_error_by_component(tmp_path):
    """benchmarks/vae_floor.py: the round trip's identity error is the mean of its components, per VAE given."""
    demo, heldout = random_demo_and_heldout(tmp_path)
    module = load_script("vae_floor")
    out = tmp_path / "results"
    out.mkdir()
    assert module.main(["--vae", str(demo / "vae"), "--heldout", str(heldout), "--frames", "17", "--clips", "2",
                        "--out", str(out)]) == 0  # fmt: skip
    (record,) = out.glob("vae-floor-*.json")
    report = json.loads(record.read_text())
    (row,) = report["vaes"]
    sizes = {"skin": 3, "hair": 3, "background": 3, "shirt": 3, "face width": 1, "face height": 1}
    weighted = sum(row["components"][k]["mean_abs_error"] * n for k, n in sizes.items()) / sum(sizes.values())
    assert row["identity_error"] == pytest.approx(weighted, rel=1e-5)
    assert sum(c["share"] for c in row["components"].values()) == pytest.approx(1.0)
    assert row["identity_error"] == pytest.approx(np.mean([c["identity_error"] for c in row["per_clip"]]), rel=1e-5)
    assert report["clips"] == 2 and "cores" in report["device"]


@pytest.mark.slow
def test_demo_sweep_scores_each_value_of_a_setting(tmp_path, capsys):
    """benchmarks/demo_sweep.py on a random demo model: one row per value, each scored on the chosen clips."""
    demo, heldout = random_demo_and_heldout(tmp_path)
    sweep = load_script("demo_sweep")
    argv = ["--setting", "num_inference_steps", "--values", "1", "2", "--clips", "0", "1", "--heldout", str(heldout),
            "--frames", "17", "--model", str(demo / "model.safetensors"), "--vae", str(demo / "vae")]  # fmt: skip
    assert sweep.main([*argv, "--out", str(tmp_path / "res")]) == 0
    (path,) = (tmp_path / "res").glob("demo-sweep-num_inference_steps-*.json")
    report = json.loads(path.read_text())
    assert [r["value"] for r in report["rows"]] == [1, 2]
    assert all(len(r["per_clip"]) == 2 and r["identity_error"] is not None for r in report["rows"])
    # which held-out draw the clips came from (several draws are swept: docs/demo.md)
    assert report["heldout"] == str(heldout) and f"of {heldout}:" in path.with_suffix(".md").read_text()
    with pytest.raises(SystemExit) as exit_:
        sweep.main([*argv, "--clips", "5", "--out", str(tmp_path / "bad")])
    assert exit_.value.code == 2 and "past the 2 held-out clips" in capsys.readouterr().err
    # --motion-levels: one row per (value, requested motion), the generation asking for that motion
    argv = [*argv[8:], "--setting", "motion_gain", "--values", "3", "--motion-levels", "0.1", "1.0", "--clips", "0"]
    assert sweep.main([*argv, "--out", str(tmp_path / "gain")]) == 0
    (path,) = (tmp_path / "gain").glob("demo-sweep-motion_gain-*.json")
    report = json.loads(path.read_text())
    assert [(r["value"], r["motion"]) for r in report["rows"]] == [(3.0, 0.1), (3.0, 1.0)]
    assert report["motion_levels"] == [0.1, 1.0] and all(len(r["per_clip"]) == 1 for r in report["rows"])
    assert "| 3.0 | 0.1 |" in path.with_suffix(".md").read_text()


def test_face_branch_separates_the_face_tokens_from_the_reference_frame(tmp_path):
    """benchmarks/face_branch.py: a zero face branch (a fresh one) changes nothing, with or without the reference
    frame; withholding the frame changes the video; a face branch with weights changes it where the frame is
    withheld."""
    from safetensors.torch import load_file, save_file

    demo, heldout = random_demo_and_heldout(tmp_path)
    model = demo / "model.safetensors"
    weights = load_file(str(model))
    keys = [k for k in weights if ".branches.face." in k]
    assert keys and all(not weights[k].any() for k in keys)  # fresh: zero-initialised
    g = torch.Generator().manual_seed(0)
    for k in keys:
        weights[k] = torch.randn(weights[k].shape, generator=g).to(weights[k].dtype)
    live = tmp_path / "live.safetensors"
    from safetensors import safe_open

    with safe_open(str(model), "pt") as f:
        save_file(weights, str(live), metadata=f.metadata())
    module = load_script("face_branch")
    out = tmp_path / "results"
    out.mkdir()
    assert module.main(["--model", str(model), str(live), "--vae", str(demo / "vae"), "--heldout", str(heldout),
                        "--frames", "9", "--clips", "1", "--steps", "2", "--out", str(out)]) == 0  # fmt: skip
    (record,) = out.glob("face-branch-*.json")
    fresh, trained = json.loads(record.read_text())["models"]
    assert fresh["effect"]["frame given"]["identity_gap"] == 0 == fresh["effect"]["frame withheld"]["identity_gap"]
    cells = fresh["cells"]
    assert cells["frame given, face on"] != cells["frame withheld, face on"]
    assert trained["effect"]["frame withheld"]["identity_gap"] != 0
    assert fresh["token_spread"]["values"] == 0  # a zero branch reads nothing from any face
    assert "| withheld | off |" in (record.with_suffix(".md")).read_text()


def write_face_shard(shards: Path, embedding_of, clips: int = 80, seed: int = 0) -> None:
    """One shard of ``clips`` samples holding only ``face_embedding.npy`` (``embedding_of(identity, rng)``) and a
    SynthTalk ``truth.json`` with random identity colours and sizes."""
    import io
    import tarfile

    rng = np.random.default_rng(seed)
    shards.mkdir(parents=True)
    with tarfile.open(shards / "shard-000000.tar", "w") as tar:
        for i in range(clips):
            colour = lambda: rng.integers(0, 256, 3).tolist()  # noqa: E731
            identity = {"skin": colour(), "hair": colour(), "background": colour(), "shirt": colour(),
                        "face_w": float(rng.uniform(0.2, 0.3)), "aspect": float(rng.uniform(1.1, 1.4))}  # fmt: skip
            buf = io.BytesIO()
            np.save(buf, np.asarray(embedding_of(identity, rng), np.float32))
            members = {"face_embedding.npy": buf.getvalue(),
                       "truth.json": json.dumps({"identity": identity, "identity_id": f"id-{i}"}).encode()}  # fmt: skip
            for suffix, data in members.items():
                info = tarfile.TarInfo(f"clip_{i:04d}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_face_branch_readout_finds_what_the_embedding_carries(tmp_path):
    """embedding_readout: an embedding made of the skin colour reads it out on unseen identities, not the shirt."""
    module = load_script("face_branch")
    shards = tmp_path / "shards"
    write_face_shard(shards, lambda ident, rng: np.r_[np.asarray(ident["skin"]) / 255.0, rng.normal(0, 0.01, 5)])
    out = module.embedding_readout(shards)
    assert out["clips"] == 80 and out["held_out_identities"] == 20
    assert out["parameters"]["skin"]["r2"] > 0.95
    assert out["parameters"]["shirt"]["r2"] < 0.2 and out["parameters"]["face width"]["r2"] < 0.2
    from fantasytalking.errors import InputError

    with pytest.raises(InputError, match="no shard"):
        module.embedding_readout(tmp_path)


def test_face_path_init_writes_a_fresh_standardised_face_conditioner(tmp_path):
    """examples/face_path_init.py: every tensor but the face path kept, the face branches zero, the conditioner
    rebuilt with the asked keys per vector and reading standardised features; an existing output is refused."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from fantasytalking.conditioning.face import FaceConditioner
    from fantasytalking.testing import make_random_demo

    model = make_random_demo(tmp_path / "demo") / "model.safetensors"
    shards = tmp_path / "shards"
    write_face_shard(shards, lambda ident, rng: 1.0 + 0.1 * rng.normal(size=128), clips=16)
    out = tmp_path / "init.safetensors"
    module = load_example("face_path_init")
    argv = ["--model", str(model), "--shards", str(shards), "--feature-tokens", "4", "--out", str(out)]
    assert module.main(argv) == 0
    before, after = load_file(str(model)), load_file(str(out))
    assert set(before) - {k for k in before if k.startswith("face.")} <= set(after)
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("face.") and ".branches.face." not in k)
    assert all(not after[k].any() for k in after if ".branches.face." in k)
    with safe_open(str(out), "pt") as f:
        config = json.loads(f.metadata()["config"])["conditioners"]["face"]
    assert config["feature_tokens"] == 4
    face = FaceConditioner(**config)
    face.load_state_dict({k[len("face."):]: v for k, v in after.items() if k.startswith("face.")}, strict=True)
    import io

    from fantasytalking.data import read_members

    feats = torch.from_numpy(np.stack([np.load(io.BytesIO(m["face_embedding.npy"]))
                                       for m in read_members(shards, ["face_embedding.npy"]).values()]))  # fmt: skip
    torch.manual_seed(0)  # the script's --seed: the same fresh weights, before the statistics are folded in
    fresh = FaceConditioner(**config)
    x = torch.randn(3, 128)
    expected = fresh.input_proj((x - feats.mean(0)) / feats.std(0, unbiased=False))
    assert torch.allclose(face.input_proj(x), expected, atol=1e-4)
    assert module.main(argv) == 2  # refused: it exists
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    argv_broken = ["--model", str(broken), "--shards", str(shards), "--out", str(tmp_path / "other.safetensors")]
    assert module.main(argv_broken) == 2 and not (tmp_path / "other.safetensors").exists()


def test_package_demo_run_ships_the_float16_copies_the_record_measured(tmp_path, monkeypatch):
    """examples/package_demo.py --run: ``--half-copies`` writes the float16 copies train_demo.sh scores; packaging
    writes the same bytes (reproducible writes), so the record's model_sha256 names the shipped file; a record of
    another file (the float32 export) is refused before anything is replaced."""
    import hashlib

    module, demo, assets, _, shards, targets = _packaging_sandbox(
        tmp_path, monkeypatch, {"seed": 0}, {"clips": 4, "num_frames": 17, "size": 96}, "demo-targets-2026-12-06.json")
    run = tmp_path / "run"
    for name in ("vae/train", "stage1", "stage2"):
        logs = run / name / "lightning_logs" / "version_0"
        logs.mkdir(parents=True)
        (logs / "hparams.yaml").write_text("{}\n")
        (logs / "metrics.csv").write_text("step,train/loss\n9,0.5\n19,0.3\n")
    shutil.copytree(demo / "vae", run / "vae", dirs_exist_ok=True)
    for name in ("stage1", "stage2"):
        shutil.copyfile(demo / "model.safetensors", run / name / "conditioning.safetensors")
    monkeypatch.setattr(sys, "argv", ["package_demo.py", "--run", str(run), "--half-copies"])
    assert module.main() == 0
    scored = hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()
    assert not (assets / "model.safetensors").exists()  # --half-copies writes into the run only

    record = json.loads(targets.read_text())
    argv = ["package_demo.py", "--run", str(run), "--shards", str(shards), "--targets", str(targets)]
    monkeypatch.setattr(sys, "argv", argv)
    float32 = hashlib.sha256((run / "stage2" / "conditioning.safetensors").read_bytes()).hexdigest()
    targets.write_text(json.dumps({**record, "model": "run/stage2/conditioning.safetensors", "model_sha256": float32}))
    with pytest.raises(SystemExit, match="not the float16 copy"):
        module.main()
    assert sorted(p.name for p in assets.iterdir()) == ["card.json"]  # nothing replaced, no scratch left
    targets.write_text(json.dumps({**record, "model": str(run / "model.safetensors"), "model_sha256": scored}))
    assert module.main() == 0
    assert hashlib.sha256((assets / "model.safetensors").read_bytes()).hexdigest() == scored
    assert (assets / "stage1.safetensors").read_bytes() == (run / "stage1.safetensors").read_bytes()
    assert json.loads((assets / "card.json").read_text())["heldout_scores"]["commit"] == "abc"
