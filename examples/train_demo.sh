#!/usr/bin/env bash
# Reproduce the embedded demo model (src/fantasytalking/assets/demo/) from nothing: SynthTalk data, the small
# per-frame Wan VAE, both FantasyTalking stages, the VAE's decoder fine-tuned, the held-out targets, the package.
# docs/demo.md has the measured times on 2 CPU cores; on a GPU add --accelerator gpu (VAE) /
# --trainer.accelerator gpu (stages).
#   bash examples/train_demo.sh [RUN_DIR]        # default runs/demo
# Set START_VAE to an exported 4x8x8 demo VAE to skip step 2a (e.g. the one of commit 8ac4415:
#   mkdir -p runs/vae-4x && for f in config.json diffusion_pytorch_model.safetensors; do
#     git show 8ac4415:src/fantasytalking/assets/demo/vae/$f > runs/vae-4x/$f; done; START_VAE=runs/vae-4x).
set -euo pipefail
RUN=${1:-runs/demo}
PY=${PY:-python}
mkdir -p "$RUN"

# 1. Data. For the VAE: 1,600 clips (400 identities, 3 languages, several voices), 96 px, 23 fps, 17 frames. For the
#    stages: 1,600 clips of the same size drawn from a pool of 1,600 identities (1,008 distinct), a quarter of
#    whose windows end over the utterance's final pause (--pause-share 0.25; without it the model did not learn
#    to close an open mouth: docs/demo.md); --workers 2 writes the same shards as one worker. The held-out split (identities, sentences
#    and voices training never sees): 32 clips of 81 frames (3.5 s).
[ -d shards/synthtalk ] || fantasytalking synth --out shards/synthtalk --clips 1600 --size 96 --fps 23 --frames 17 --seed 0 --quiet
[ -d shards/synthtalk-j ] || fantasytalking synth --out shards/synthtalk-j --clips 1600 --size 96 --fps 23 --frames 17 --seed 0 \
    --identities 1600 --pause-share 0.25 --workers 2 --quiet
[ -d shards/synthtalk-heldout ] || fantasytalking synth --out shards/synthtalk-heldout --clips 32 --size 96 --fps 23 --frames 81 --seed 1 --split heldout --quiet

# 2a. The VAE as first trained (Wan2.2 residual blocks, WITH 4x temporal compression): 800 steps, then 400 more
#     from that export (docs/demo.md; loss curve benchmarks/results/demo-training/vae-4x.csv). It draws faces but not mouths.
if [ -z "${START_VAE:-}" ]; then
  $PY -m fantasytalking.training.vae --shards shards/synthtalk --out "$RUN/vae-4x-a" --steps 800 --lr 2e-4 \
      --single-frame-prob 0.75 --seed 0 --accelerator cpu \
      --vae-config '{"temperal_downsample": [false, true, true], "scale_factor_temporal": 4}'
  $PY -m fantasytalking.training.vae --shards shards/synthtalk --out "$RUN/vae-4x" --init-from "$RUN/vae-4x-a" \
      --steps 400 --lr 2e-4 --single-frame-prob 0.75 --seed 1 --accelerator cpu \
      --vae-config '{"temperal_downsample": [false, true, true], "scale_factor_temporal": 4}'
  START_VAE="$RUN/vae-4x"
fi
# 2b. The demo VAE: that VAE without temporal compression (per_frame_vae), trained on single frames with the
#     mouth-weighted loss and 48-px crops, half of them on the lips; scored on held-out clips every 100 steps.
$PY -m fantasytalking.training.vae --shards shards/synthtalk --out "$RUN/vae" --init-per-frame "$START_VAE" \
    --steps 400 --lr 2e-4 --batch-size 16 --crop-size 48 --mouth-crop-prob 0.5 --mouth-weight 2 \
    --single-frame-prob 1.0 --frames-per-clip 4 --heldout shards/synthtalk-heldout --eval-every 100 \
    --eval-clips 4 --seed 0 --accelerator cpu

# 3. Stage one (clip-level audio), then stage two (frame-level audio + lip mask) from stage one's weights; the
#    frozen encodes are cached in $RUN/encode-cache during stage one and reused by stage two. The face path trains
#    from the first step: the Q-Former reads each dlib vector as 8 keys, and a fresh conditioner folds the
#    shards' face-feature statistics into its input projection when fit starts (face.standardize). Stage two
#    takes the lip loss for 20% of the samples (eta 0.8; the paper's 0.2 let the demo's fully trained backbone
#    draw mouths all over the face: docs/design.md).
FACE=(--model.init_args.face.feature_tokens 8 --model.init_args.face.standardize true)
$PY examples/finetune.py fit --config examples/configs/stage1.yaml --config examples/configs/demo.yaml \
    --data.init_args.shards shards/synthtalk-j --model.init_args.backbone.vae "$RUN/vae" \
    --model.init_args.objective.cache_dir "$RUN/encode-cache" "${FACE[@]}" \
    --trainer.max_steps 1200 --trainer.default_root_dir "$RUN/stage1"
$PY examples/finetune.py fit --config examples/configs/stage2.yaml --config examples/configs/demo.yaml \
    --data.init_args.shards shards/synthtalk-j --model.init_args.backbone.vae "$RUN/vae" \
    --model.init_args.objective.cache_dir "$RUN/encode-cache" "${FACE[@]}" \
    --model.init_args.init_from "$RUN/stage1/final.ckpt" --model.init_args.lip_mask_eta 0.8 \
    --trainer.max_steps 2400 --trainer.default_root_dir "$RUN/stage2"
# 4. The decoder alone, fine-tuned on the stages' shards (1,008 distinct identities against the VAE data's 400) with
#    mouth weight 4: the encoder, quant_conv and latent statistics stay bit for bit, so the latents the stages
#    trained on do not change (docs/demo.md, "A decoder fine-tuned"). Monitored on a third held-out draw, never on
#    the targets' split.
[ -d shards/synthtalk-heldout-s3 ] || fantasytalking synth --out shards/synthtalk-heldout-s3 --clips 32 --size 96 --fps 23 \
    --frames 81 --seed 3 --split heldout --quiet
$PY -m fantasytalking.training.vae --shards shards/synthtalk-j --out "$RUN/vae-dec" --decoder-only \
    --init-from "$RUN/vae" --steps 300 --lr 2e-4 --batch-size 8 --frames-per-clip 4 --single-frame-prob 1.0 \
    --mouth-weight 4 --heldout shards/synthtalk-heldout-s3 --eval-every 100 --eval-clips 8 --checkpoint-every 100 \
    --seed 0 --accelerator cpu
# 5. The targets on the held-out split through that decoder (benchmarks/results/demo-targets-<date>.{json,md}),
#    then the package: the run with its VAE, then the decoder in its place (checked to keep the VAE's latents).
#    The targets score the float16 copies the package ships (package_demo.py writes the same bytes again and checks
#    them against the record's model_sha256).
$PY examples/package_demo.py --run "$RUN" --half-copies
$PY benchmarks/demo_targets.py --model "$RUN/model.safetensors" \
    --stage1 "$RUN/stage1.safetensors" --vae "$RUN/vae-dec" --seed 0 --clips 16 --motion-clips 4 \
    --audio-cfg 2.0
TARGETS=$(ls -t benchmarks/results/demo-targets-$(date +%F)*.json | head -1)
$PY examples/package_demo.py --run "$RUN" --shards shards/synthtalk-j --vae-steps 400 --audio-cfg 2.0 --targets "$TARGETS"
$PY examples/package_demo.py --decoder "$RUN/vae-dec" --decoder-shards shards/synthtalk-j --targets "$TARGETS"
