#!/usr/bin/env bash
# examples/train_demo_gpu.sh on a bare, offline GPU machine (the device tool's H100 / H200): its image has Python 3.12
# with PyTorch, Lightning, transformers and torchmetrics, but not diffusers, webdataset, PyAV, dlib or espeak-ng,
# which travel in .carry/ (benchmarks/device/prepare_carry.sh). Results go to $OUT (what the tool brings back):
# the float16 exports of the full model's two stages and of the ablation's stage two, and logs.tar.gz (loss
# curves, logs, summary.json). benchmarks/device/README.md has the whole procedure.
#
#   OUT=/tmp/out BUDGET=500 bash benchmarks/device/demo_gpu.sh      # training done 500 s after the start
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT to the folder whose files come back}
RUN=${RUN:-/tmp/demo-gpu}
SITE=/tmp/ft-site
ESPEAK=/tmp/ft-espeak
started=$(date +%s)
mkdir -p "$SITE" "$ESPEAK" "$RUN"
xz -dc "${CARRY:-.carry}/site.tar.xz" | tar -C "$SITE" -xf -
xz -dc "${CARRY:-.carry}/espeak.tar.xz" | tar -C "$ESPEAK" -xf -
export PYTHONPATH=$PWD/src:$SITE LD_LIBRARY_PATH=$ESPEAK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
PYTHON=${PYTHON:-python3}  # the image's Python with PyTorch
export ESPEAK_DATA_PATH=$ESPEAK PYTHONUNBUFFERED=1 PY=$PYTHON
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv || echo "no nvidia-smi"; } | tee "$RUN/gpu.txt"
nproc | tee -a "$RUN/gpu.txt"

# Preflight: every carried piece imports and works (seconds), before the minutes of data and training.
"$PYTHON" - <<'EOF'
import os
import av, diffusers, dlib, jsonargparse, lightning, numpy as np, torch, transformers, webdataset
from fantasytalking.data.synthtalk import espeak_available, synthesize
from fantasytalking.face.embed import DlibFaceEncoder
from fantasytalking.training.presets import demo_pipeline

assert torch.cuda.is_available() or os.environ.get("ACCELERATOR") == "cpu", "no CUDA device"
assert espeak_available(), "libespeak-ng does not load"
speech = synthesize("Guten Tag", voice="de+f3", rate=150)
assert speech.audio.size > 0 and speech.phonemes, "espeak-ng spoke nothing"
DlibFaceEncoder()
demo_pipeline()
print("preflight ok:", torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "lightning", lightning.__version__,
      "transformers", transformers.__version__, "diffusers", diffusers.__version__, "av", av.__version__,
      "dlib", dlib.__version__, "numpy", np.__version__)
EOF
echo "set-up and preflight: $(( $(date +%s) - started )) s"

status=0
# BUDGET: seconds from this script's start by which the training must be done (the exports and copies follow)
export DEADLINE=${DEADLINE:-$((started + ${BUDGET:-500}))}
bash examples/train_demo_gpu.sh "$RUN" 2>&1 | tee "$RUN/train.log" || status=$?
for name in full-stage1 full-stage2 no-face-stage2; do
  [ -f "$RUN/export/$name.safetensors" ] && cp "$RUN/export/$name.safetensors" "$OUT/"
done
tar -C "$RUN" -czf "$OUT/logs.tar.gz" --exclude='*.safetensors' --exclude='*.ckpt' export gpu.txt \
    train.log full.stage1.log full.stage2.log no-face.stage1.log no-face.stage2.log shards/synthtalk.json \
    shards/stats.json 2>/dev/null || true
echo "total: $(( $(date +%s) - started )) s, exit $status"
exit $status
