#!/usr/bin/env bash
# The paper's Table 5 ablation (`vlparse ablate`) on one GPU: a 20,000-image scene world, all six
# rows (R50, R101, Swin-T w/o / Rand / attention MFR, patch projection) x 3 seeds = 18 units of
# pre-training + VQA fine-tuning + F^{1,3} probe, the same budget for every row.
#
# Usage: OUT=results_dir TOKENIZER=path/to/bert-tokenizer bash benchmarks/gpu_ablation.sh [k=v ...]
# (TOKENIZER defaults to bert-base-uncased, resolved offline by vlparse.) Run it again with the
# same settings to finish an interrupted run (WORK keeps the runs).
#
# Sizing for ~25 minutes on one H100: ablation-size pre-training runs at about 1,000 images/s
# (R101 slower, the patch row faster), so 150 steps x 256 images ~ 40 s per unit; VQA fine-tuning
# (one text per example) 150 steps x 256 ~ 15 s; model build, held-out evaluation, VQA
# evaluation, probe and checkpoints ~ 20 s: ~75 s x 18 units ~ 23 min, plus ~1-2 min to draw the
# world. Raise PRETRAIN_STEPS / FINETUNE_STEPS when more time is available.
set -euo pipefail
OUT=${OUT:-benchmarks/results/ablation_table5_h100}
WORK=${WORK:-/tmp/ablation_table5}
WORLD=${WORLD:-/tmp/world20k}
TOKENIZER=${TOKENIZER:-bert-base-uncased}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-150}
FINETUNE_STEPS=${FINETUNE_STEPS:-150}
SEEDS=${SEEDS:-3}
mkdir -p "$OUT"
start=$(date +%s)
if [ ! -f "$WORLD/manifest.json" ]; then
  python -m vlparse.cli data synth --out "$WORLD" --images 20000 --workers 16 --image-size 256 \
    2>&1 | tail -1
fi
echo "world ready after $(( $(date +%s) - start )) s"
python -m vlparse.cli ablate --data "$WORLD/manifest.json" --out "$WORK" --seeds "$SEEDS" \
  --pretrain-steps "$PRETRAIN_STEPS" --finetune-steps "$FINETUNE_STEPS" \
  --base-config ablation --finetune-config vqa_world --task vqa --probe-samples 300 \
  --no-progress \
  model.text.tokenizer="$TOKENIZER" model.visual.drop_path_rate=0.0 \
  train.batch_size=256 train.log_every=25 train.eval_images=200 data.num_workers=14 \
  optim.lr=1e-4 optim.visual_lr=1e-4 optim.decay_epochs=[] \
  finetune.train.batch_size=256 finetune.train.log_every=25 finetune.data.num_workers=14 \
  finetune.optim.lr=1e-4 finetune.optim.visual_lr=1e-4 finetune.optim.decay_epochs=[] \
  finetune.task.eval_max_images=5000 \
  "$@" 2>&1 | grep -v "Warning"
echo "ablation finished after $(( $(date +%s) - start )) s"
# the table, the plot, the experiment's arguments and every unit's summary (no checkpoints)
cp "$WORK"/table5.md "$WORK"/table5.json "$WORK"/table5.png "$WORK"/ablation.json "$OUT/"
for f in "$WORK"/runs/*/seed*/summary.json; do
  unit=${f#"$WORK"/runs/}
  mkdir -p "$OUT/runs/$(dirname "$unit")"
  cp "$f" "$OUT/runs/$unit"
done
