#!/usr/bin/env bash
# What a GPU run of the demo recipe costs on the lent machine, measured in one short call: SynthTalk's throughput
# by number of workers (and with BLAS/OpenMP threads held to one per worker), and the seconds per training step of
# both stages at the GPU recipe's settings (batch 8 of 81-frame clips, float32 with TF32 matmuls). Results in
# $OUT/probe.json and $OUT/probe.log. Same set-up as demo_gpu.sh (.carry/, benchmarks/device/README.md).
#
#   OUT=/tmp/out bash benchmarks/device/probe_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT to the folder whose files come back}
RUN=${RUN:-/tmp/probe}
PYTHON=${PYTHON:-python3}
SITE=/tmp/ft-site
ESPEAK=/tmp/ft-espeak
started=$(date +%s)
mkdir -p "$SITE" "$ESPEAK" "$RUN"
xz -dc "${CARRY:-.carry}/site.tar.xz" | tar -C "$SITE" -xf -
xz -dc "${CARRY:-.carry}/espeak.tar.xz" | tar -C "$ESPEAK" -xf -
export PYTHONPATH=$PWD/src:$SITE LD_LIBRARY_PATH=$ESPEAK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export ESPEAK_DATA_PATH=$ESPEAK PYTHONUNBUFFERED=1 PY=$PYTHON
log() { echo "$*" | tee -a "$OUT/probe.log"; }
log "set-up: $(( $(date +%s) - started )) s; $(nproc) cores"
synth() {  # synth NAME CLIPS WORKERS [env...]
  local name=$1 clips=$2 workers=$3
  shift 3
  local t0
  t0=$(date +%s.%N)
  env "$@" "$PYTHON" -m fantasytalking.cli synth --out "$RUN/$name" --clips "$clips" --size 96 --fps 23 --frames 81 \
      --seed 0 --identities "$clips" --pause-share 0.25 --workers "$workers" --clips-per-shard 8 --quiet | tee -a "$OUT/probe.log"
  log "synth $name: $clips clips, $workers workers, ${*:-default threads}: $(awk "BEGIN{print $(date +%s.%N) - $t0}") s (process)"
}
synth one 8 1
synth w16 64 16
synth w16-1thread 64 16 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
synth w8-1thread 64 8 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

# training step time on the w16 shards (64 clips): each stage 45 s of training after its start-up
export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1
for stage in 1 2; do
  init=()
  [ "$stage" = 2 ] && init=(--model.init_args.init_from "$RUN/stage1/final.ckpt" --model.init_args.lip_mask_eta 0.8)
  t0=$(date +%s)
  "$PYTHON" examples/finetune.py fit --config "examples/configs/stage$stage.yaml" --config examples/configs/demo.yaml \
      --data.init_args.shards "$RUN/w16" --data.init_args.num_frames 81 --data.init_args.batch_size 8 \
      --data.init_args.num_workers 6 --model.init_args.backbone.vae src/fantasytalking/assets/demo/vae \
      --model.init_args.objective.cache_encodes false --model.init_args.objective.cache_dir null \
      --model.init_args.face.feature_tokens 8 --model.init_args.face.standardize true \
      --trainer.accelerator gpu --trainer.max_steps 1000000 --trainer.max_time 00:00:03:00 \
      --trainer.callbacks+=fantasytalking.training.TimeBudget --trainer.callbacks.init_args.seconds 45 \
      --trainer.callbacks.init_args.probe_steps 40 --trainer.callbacks.init_args.skip_steps 20 \
      --trainer.logger lightning.pytorch.loggers.CSVLogger --trainer.logger.init_args.save_dir "$RUN/stage$stage" \
      --trainer.default_root_dir "$RUN/stage$stage" "${init[@]}" > "$RUN/stage$stage.log" 2>&1 || true
  { grep -h "time budget\|Error\|error" "$RUN/stage$stage.log" || echo "(no time-budget line: see stage$stage.tail.log)"; } \
      | tail -3 | tee -a "$OUT/probe.log"
  tail -n 40 "$RUN/stage$stage.log" > "$OUT/stage$stage.tail.log"
  log "stage $stage: $(( $(date +%s) - t0 )) s for the whole process"
done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/probe.log"
log "total: $(( $(date +%s) - started )) s"
