#!/usr/bin/env bash
# The GPU pre-training run of the `ablation` model on a 20,000-image scene world (one H100).
# Usage: OUT=results_dir TOKENIZER=path/to/bert-tokenizer bash benchmarks/gpu_pretrain_ablation.sh
# (TOKENIZER defaults to bert-base-uncased, resolved offline by vlparse.)
set -euo pipefail
OUT=${OUT:-benchmarks/results/pretrain_ablation}
TOKENIZER=${TOKENIZER:-bert-base-uncased}
MINUTES=${MINUTES:-7}
mkdir -p "$OUT"
python -m vlparse.cli data synth --out /tmp/world20k --images 20000 --workers 16 --image-size 256 \
  2>&1 | tail -1
python -m vlparse.cli pretrain --config ablation --data /tmp/world20k/manifest.json \
  --out /tmp/pretrain_ablation \
  model.text.tokenizer="$TOKENIZER" model.visual.drop_path_rate=0.0 \
  train.batch_size=256 train.max_minutes="$MINUTES" train.epochs=100 train.log_every=25 \
  train.ckpt_every=100000 train.eval_images=1000 train.progress=false \
  optim.lr=1e-4 optim.visual_lr=1e-4 optim.warmup_steps=200 optim.decay_epochs=[] \
  data.num_workers=14 "$@" 2>&1 | grep -v "Warning" | tail -15
for f in summary.json log.jsonl loss_curves.png config.yaml run_info.json; do
  cp "/tmp/pretrain_ablation/$f" "$OUT/"
done
