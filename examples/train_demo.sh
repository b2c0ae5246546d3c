#!/usr/bin/env bash
# Reproduce the embedded demo model (src/fantasytalking/assets/demo/) from nothing: SynthTalk data, the small Wan
# VAE, both FantasyTalking stages, the held-out targets. About 1.5 h on 2 CPU cores (docs/demo.md has the measured
# times); on a GPU add --accelerator gpu / --trainer.accelerator gpu.
#   bash examples/train_demo.sh [RUN_DIR]        # default runs/demo; then `python examples/package_demo.py`
set -euo pipefail
RUN=${1:-runs/demo}
PY=${PY:-python}
mkdir -p "$RUN"

# 1. Data: 1,600 training clips (400 identities, 3 languages, several voices), 96 px, 23 fps, 17 frames; and the
#    held-out split (identities, sentences and voices training never sees), 32 clips of 81 frames (3.5 s).
[ -d shards/synthtalk ] || fantasytalking synth --out shards/synthtalk --clips 1600 --size 96 --fps 23 --frames 17 --seed 0 --quiet
[ -d shards/synthtalk-heldout ] || fantasytalking synth --out shards/synthtalk-heldout --clips 32 --size 96 --fps 23 --frames 81 --seed 1 --split heldout --quiet

# 2. The VAE: batch 4 (75% single-frame steps of 4 frames a clip), L1 + MSE on posterior modes, exported with its
#    latent statistics (lr 3e-4 and above collapse to a constant output: docs/design.md). 800 steps reached 17 dB on
#    held-out clips without a mouth (docs/demo.md); give it more, or add --init-from src/fantasytalking/assets/demo/vae
#    to continue the partly trained one.
$PY -m fantasytalking.training.vae --shards shards/synthtalk --out "$RUN/vae" --steps 2500 --lr 2e-4 \
    --single-frame-prob 0.75 --mse-weight 1.0 --posterior mode --seed 0 --accelerator cpu

# 3. Stage one (clip-level audio), then stage two (frame-level audio + lip mask) from stage one's weights.
$PY examples/finetune.py fit --config examples/configs/stage1.yaml --config examples/configs/demo.yaml \
    --data.init_args.shards shards/synthtalk --model.init_args.backbone.vae "$RUN/vae" \
    --model.init_args.objective.cache_dir "$RUN/encode-cache" \
    --trainer.max_steps 800 --trainer.default_root_dir "$RUN/stage1"
$PY examples/finetune.py fit --config examples/configs/stage2.yaml --config examples/configs/demo.yaml \
    --data.init_args.shards shards/synthtalk --model.init_args.backbone.vae "$RUN/vae" \
    --model.init_args.objective.cache_dir "$RUN/encode-cache" \
    --model.init_args.init_from "$RUN/stage1/final.ckpt" \
    --trainer.max_steps 900 --trainer.default_root_dir "$RUN/stage2"

# 4. The targets on the held-out split (benchmarks/results/demo-targets-<date>.{json,md}).
$PY benchmarks/demo_targets.py --model "$RUN/stage2/conditioning.safetensors" \
    --stage1 "$RUN/stage1/conditioning.safetensors" --vae "$RUN/vae" --seed 0
