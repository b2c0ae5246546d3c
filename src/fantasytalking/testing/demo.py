"""A demo model folder in the packaged layout (``examples/package_demo.py``) with RANDOM weights.

For tests and for trying ``fantasytalking demo --demo-dir`` / ``benchmarks/demo_targets.py`` before a trained
demo model exists: the same classes and sizes as the trained one (``demo`` preset, face and motion
conditioners, a full-backbone export), untrained, so the videos are noise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

__all__ = ["make_random_demo"]


def make_random_demo(directory: str | Path, *, seed: int = 0, steps: int = 2) -> Path:
    """Write ``model.safetensors``, ``vae/``, ``card.json`` and the bundled inputs into ``directory``.

    ``steps``: the card's sampling steps (what ``fantasytalking demo`` uses by default).
    """
    from fantasytalking.demo import DEMO_DIR
    from fantasytalking.training import StageTwoLipRefiner, export_conditioning
    from fantasytalking.training.presets import DEMO_FACE, DEMO_MOTION, demo_vae

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    module = StageTwoLipRefiner(backbone={"preset": "demo", "seed": seed}, face=dict(DEMO_FACE),
                                motion=dict(DEMO_MOTION), trainable={"mode": "full"}, seed=seed)  # fmt: skip
    export_conditioning(module, root / "model.safetensors")
    demo_vae(None, seed=seed).save_pretrained(str(root / "vae"))
    for name in ("portrait.png", "speech.wav", "inputs.json"):
        shutil.copyfile(DEMO_DIR / name, root / name)
    card = {
        "what": "RANDOM demo-preset weights (fantasytalking.testing.make_random_demo): noise videos",
        "command": "make_random_demo", "seed": seed, "data": {}, "wall_time_s": {}, "clip_frames": 17,
        "size": 96, "heldout": None, "training_config": {"face": dict(DEMO_FACE), "motion": dict(DEMO_MOTION)},
        "inputs": json.loads((DEMO_DIR / "inputs.json").read_text()),
        "generation": {"num_inference_steps": steps},
    }  # fmt: skip
    (root / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return root
