#!/usr/bin/env bash
# The demo recipe on one GPU, in a fixed wall-clock budget (docs/demo.md, "Trained on a GPU"):
#   1. SynthTalk clips of 81 frames (the held-out clips' length and the paper's), an identity pool as large as the
#      clip count, a quarter of the windows ending over the utterance's final pause, written by every core (`synth --workers`);
#   2. stage one, then stage two from its EMA weights, on the packaged demo VAE, with the face path trained jointly
#      from the first step (8 keys per face vector, features standardised on the shards: face.standardize), each
#      stage's length chosen by TimeBudget from its measured step time so that it ends on time with its cosine
#      schedule complete;
#   3. with ABLATION=1 (default) the same recipe WITHOUT the face conditioner beside it on the same GPU: the paper's
#      "w/o identity" ablation, for the held-out identity check;
#   4. float16 copies of the exports (as packaged) and the loss curves in RUN/export.
#
#   bash examples/train_demo_gpu.sh [RUN_DIR]          # default runs/demo-gpu
#   STAGE1_SECONDS=600 STAGE2_SECONDS=900 bash examples/train_demo_gpu.sh runs/demo-gpu-long
#   DEADLINE=$(( $(date +%s) + 480 )) bash examples/train_demo_gpu.sh     # done within 8 minutes, data included
#
# Every setting below can be overridden from the environment; a CPU smoke run of the whole script:
#   ACCELERATOR=cpu CLIPS=8 FRAMES=17 BATCH=2 LOADERS=1 STAGE1_SECONDS=30 STAGE2_SECONDS=30 SKIP_STEPS=1 \
#   PROBE_STEPS=2 LOG_EVERY=1 bash examples/train_demo_gpu.sh /tmp/demo-gpu-smoke
set -euo pipefail
RUN=${1:-runs/demo-gpu}
PY=${PY:-python}
CLIPS=${CLIPS:-2000}
FRAMES=${FRAMES:-81}
SIZE=${SIZE:-96}
SEED=${SEED:-0}
WORKERS=${WORKERS:-$(nproc)}
BATCH=${BATCH:-8}
LOADERS=${LOADERS:-6}
STAGE1_SECONDS=${STAGE1_SECONDS:-120}
STAGE2_SECONDS=${STAGE2_SECONDS:-180}
# DEADLINE (unix seconds): instead of the two budgets above, whatever is left after the data, less STAGE_OVERHEAD
# seconds for each stage's start-up and export, split 40 / 60 between the stages (stage one / two)
DEADLINE=${DEADLINE:-}
STAGE_OVERHEAD=${STAGE_OVERHEAD:-60}  # a Python start on the lent H200 alone took 18-26 s
SKIP_STEPS=${SKIP_STEPS:-20}
PROBE_STEPS=${PROBE_STEPS:-40}
ACCELERATOR=${ACCELERATOR:-gpu}
ABLATION=${ABLATION:-1}
VAE=${VAE:-src/fantasytalking/assets/demo/vae}
SHARDS=${SHARDS:-$RUN/shards}
mkdir -p "$RUN/export"
# float32 training as on the CPU, with the matrix units' TF32 for matmuls on a GPU
[ "$ACCELERATOR" = gpu ] && export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1
t_start=$(date +%s)

if [ ! -f "$SHARDS/manifest.jsonl" ]; then
  $PY -m fantasytalking.cli synth --out "$SHARDS" --clips "$CLIPS" --size "$SIZE" --fps 23 --frames "$FRAMES" \
      --seed "$SEED" --identities "$CLIPS" --pause-share 0.25 --workers "$WORKERS" --quiet
fi
t_data=$(date +%s)
if [ -n "$DEADLINE" ]; then
  left=$((DEADLINE - t_data - 2 * STAGE_OVERHEAD))
  [ "$left" -ge 60 ] || { echo "only $left s left for training before DEADLINE; give more time" >&2; exit 1; }
  STAGE1_SECONDS=$((left * 2 / 5))
  STAGE2_SECONDS=$((left - STAGE1_SECONDS))
fi
echo "data: $((t_data - t_start)) s; training budgets: stage one $STAGE1_SECONDS s, stage two $STAGE2_SECONDS s"

hms() { printf '00:%02d:%02d:%02d' $(($1 / 3600)) $(($1 % 3600 / 60)) $(($1 % 60)); }
stage() {  # stage DIR CONFIG SECONDS INIT [overrides...]: one stage in the time budget
  local dir=$1 config=$2 seconds=$3 init=$4
  shift 4
  local init_args=()
  [ -n "$init" ] && init_args=(--model.init_args.init_from "$init")
  $PY examples/finetune.py fit --config "examples/configs/$config" --config examples/configs/demo.yaml \
      --data.init_args.shards "$SHARDS" --data.init_args.num_frames "$FRAMES" --data.init_args.batch_size "$BATCH" \
      --data.init_args.num_workers "$LOADERS" --data.init_args.shuffle_buffer 256 \
      --model.init_args.backbone.vae "$VAE" --model.init_args.seed "$SEED" --seed_everything "$SEED" \
      --model.init_args.objective.cache_encodes false --model.init_args.objective.cache_dir null \
      --trainer.accelerator "$ACCELERATOR" --trainer.max_steps 1000000 \
      --trainer.max_time "$(hms $((seconds + seconds / 4 + 30)))" \
      --trainer.callbacks+=fantasytalking.training.TimeBudget --trainer.callbacks.init_args.seconds "$seconds" \
      --trainer.callbacks.init_args.probe_steps "$PROBE_STEPS" --trainer.callbacks.init_args.skip_steps "$SKIP_STEPS" \
      --trainer.logger lightning.pytorch.loggers.CSVLogger --trainer.logger.init_args.save_dir "$dir" \
      --trainer.log_every_n_steps "${LOG_EVERY:-10}" \
      --trainer.default_root_dir "$dir" "${init_args[@]}" "$@"
}
both_stages() {  # both_stages DIR [overrides of both stages...]
  local dir=$1
  shift
  stage "$dir/stage1" stage1.yaml "$STAGE1_SECONDS" "" "$@" > "$dir.stage1.log" 2>&1
  stage "$dir/stage2" stage2.yaml "$STAGE2_SECONDS" "$dir/stage1/final.ckpt" --model.init_args.lip_mask_eta 0.8 "$@" \
      > "$dir.stage2.log" 2>&1
}

FACE=(--model.init_args.face.feature_tokens 8 --model.init_args.face.standardize true)
both_stages "$RUN/full" "${FACE[@]}" &
full=$!
ablation=
if [ "$ABLATION" = 1 ]; then
  both_stages "$RUN/no-face" --model.init_args.face null &
  ablation=$!
fi
status=0
wait "$full" || { status=$?; echo "the full model's run failed (exit $status): see $RUN/full.stage*.log" >&2; tail -n 30 "$RUN"/full.stage*.log >&2; }
if [ -n "$ablation" ]; then
  wait "$ablation" || { echo "the ablation's run failed: see $RUN/no-face.stage*.log" >&2; tail -n 30 "$RUN"/no-face.stage*.log >&2; }
fi
t_end=$(date +%s)

# float16 copies (what the package holds) and step,loss curves; a summary of the run
$PY - "$RUN" "$((t_data - t_start))" "$((t_end - t_data))" <<'EOF'
import csv, json, platform, sys
from pathlib import Path

import torch

sys.path.insert(0, "examples")
from package_demo import curve, half_copy  # noqa: E402

run, data_s, train_s = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
summary = {"data_seconds": data_s, "training_seconds": train_s, "torch": torch.__version__,
           "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
           "runs": {}}
for variant in ("full", "no-face"):
    for stage in ("stage1", "stage2"):
        folder = run / variant / stage
        export = folder / "conditioning.safetensors"
        if not export.is_file():
            continue
        name = f"{variant}-{stage}"
        half_copy(export, run / "export" / f"{name}.safetensors")
        logged = sorted(folder.glob("lightning_logs/version_*/metrics.csv"))
        points = curve(logged[-1], "train/loss") if logged else []
        with open(run / "export" / f"{name}.csv", "w", newline="") as fh:
            csv.writer(fh).writerows([("step", "loss"), *points])
        state = torch.load(folder / "final.ckpt", map_location="cpu", weights_only=False).get("callbacks", {})
        budget = next((v for k, v in state.items() if k.startswith("TimeBudget")), {})
        summary["runs"][name] = {"steps": points[-1][0] + 1 if points else 0, **budget,
                                 "loss_last_100": sum(v for _, v in points[-10:]) / max(len(points[-10:]), 1)}
(run / "export" / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
EOF
exit $status
