"""Wall time of the README's first command's job: ``fantasytalking demo`` on the bundled inputs.

Issue 4 asks for the embedded default to generate a talking video from the bundled portrait and ~4 s of speech on
CPU within 2 minutes of wall time on 2 cores, after set-up. This runs the real command line in a fresh process
(interpreter start, imports, model load, generation, mp4 encoding: everything a user waits for) ``--repeats``
times and records each wall time with the machine it ran on::

    python benchmarks/bench_demo.py                 # -> benchmarks/results/bench_demo-<date>.json
    python benchmarks/bench_demo.py --threads 2     # pin torch's intra-op threads (OMP_NUM_THREADS)

The record says nothing about quality (``benchmarks/demo_targets.py`` does).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from variants import commit, cpu_name, file_sha256, new_record_stem  # noqa: E402

RESULTS = HERE / "results"
#: The issue's budget for the job, seconds on 2 CPU cores.
BUDGET_S = 120.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2, help="runs of the command (each in a fresh process)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the command (default: unset)")
    p.add_argument("--demo-dir", type=Path, default=None, help="a packaged demo folder (default: the shipped one)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the demo's)")
    p.add_argument("--audio", type=Path, default=None, help="speech (default: the bundled ~4 s sentence)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")

    import soundfile as sf
    import torch

    from fantasytalking.demo import DEMO_DIR, demo_inputs

    _, bundled = demo_inputs(args.demo_dir)
    model = Path(args.demo_dir or DEMO_DIR) / "model.safetensors"  # which model was timed: its sha256
    speech = args.audio or bundled
    extra = [*(["--demo-dir", str(args.demo_dir)] if args.demo_dir else []),
             *(["--audio", str(args.audio)] if args.audio else []),
             *(["--steps", str(args.steps)] if args.steps else [])]  # fmt: skip
    speech_s = sf.info(str(speech)).duration
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            out = Path(tmp) / f"demo-{i}.mp4"
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "fantasytalking.cli", "demo", "--output", str(out),
                                   "--quiet", *extra], capture_output=True, text=True, env=env)  # fmt: skip
            wall = time.perf_counter() - start
            if proc.returncode != 0 or not out.exists():
                print(proc.stdout + proc.stderr, file=sys.stderr)
                print(f"error: fantasytalking demo failed (exit {proc.returncode})", file=sys.stderr)
                return 1
            found = re.search(r"demo: (\d+) frames .* in (\d+) s", proc.stdout)
            runs.append({"wall_s": round(wall, 1), "frames": int(found.group(1)) if found else None,
                         "load_and_generate_s": float(found.group(2)) if found else None,
                         "mp4_bytes": out.stat().st_size})  # fmt: skip
            print(f"run {i + 1}: {wall:.1f} s wall ({runs[-1]['frames']} frames)")
    walls = [r["wall_s"] for r in runs]
    record = {
        "what": "fantasytalking demo on the bundled inputs, whole process wall time",
        "date": dt.date.today().isoformat(), "commit": commit(),
        "device": f"CPU ({cpu_name()}, {os.cpu_count()} cores visible)",
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "omp_num_threads": args.threads,
        "demo_dir": str(args.demo_dir or "shipped"), "model_sha256": file_sha256(model),
        "steps": args.steps or "the demo's",
        "audio": str(args.audio or "bundled"),
        "speech_s": round(speech_s, 2), "runs": runs, "best_wall_s": min(walls), "worst_wall_s": max(walls),
        "budget_s": BUDGET_S, "within_budget": max(walls) <= BUDGET_S,
    }  # fmt: skip
    path = new_record_stem(args.out, f"bench_demo-{record['date']}").with_suffix(".json")  # never overwrites
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"best {min(walls):.1f} s, worst {max(walls):.1f} s for {speech_s:.2f} s of speech "
          f"(budget {BUDGET_S:.0f} s) -> {path}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
