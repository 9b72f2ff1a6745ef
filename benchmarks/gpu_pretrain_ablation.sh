#!/usr/bin/env bash
# The GPU pre-training run of the `ablation` model on a 20,000-image scene world (one H100).
# Usage: OUT=results_dir [MINUTES=7] [RESUME=1] bash benchmarks/gpu_pretrain_ablation.sh [k=v ...]
# TOKENIZER defaults to .devdata/bert-tok when that folder exists (the offline BERT tokenizer
# files carried to the GPU machine), else bert-base-uncased (resolved offline by vlparse).
# The world (WORLD, default /tmp/world20k) is drawn only when absent. RESUME=1 continues the run
# in RUN (default /tmp/pretrain_ablation) from its last checkpoint for MINUTES more minutes (a
# second 10-minute call on the same warm machine); without a checkpoint it starts from step 0.
# Checkpoints every CKPT_EVERY (500) steps and at the end, so a call cut short can be resumed.
# Unmatched captions are lent within the batch, and MLM waits 1,000 steps, then ramps in over 500
# (session 8's run waited 400 and ramped over 400: benchmarks/results/pretrain_ablation_h100_long/;
# on the CPU quickstart a longer wait gave ITM more, docs/results/itm_learnability/session9/;
# the steps of the wait skip the masked pass and cost less); later key=value arguments override
# these.
# Without RESUME=1 an existing RUN folder is removed first (a new run).
set -euo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-benchmarks/results/pretrain_ablation}
WORLD=${WORLD:-/tmp/world20k}
RUN=${RUN:-/tmp/pretrain_ablation}
if [ -z "${TOKENIZER:-}" ]; then
  TOKENIZER=bert-base-uncased
  if [ -d .devdata/bert-tok ]; then TOKENIZER=.devdata/bert-tok; fi
fi
MINUTES=${MINUTES:-7}
CKPT_EVERY=${CKPT_EVERY:-500}
RESUME_FLAG=()
if [ "${RESUME:-0}" = "1" ]; then
  RESUME_FLAG=(--resume)
elif [ -e "$RUN" ]; then
  echo "starting over: removing the earlier run in $RUN (RESUME=1 continues it instead)"
  rm -rf -- "$RUN"
fi
mkdir -p "$OUT"
if [ ! -f "$WORLD/manifest.json" ]; then
  python -m vlparse.cli data synth --out "$WORLD" --images 20000 --workers 16 --image-size 256 \
    2>&1 | tail -1
fi
python -m vlparse.cli pretrain --config ablation --data "$WORLD/manifest.json" \
  --out "$RUN" ${RESUME_FLAG[@]+"${RESUME_FLAG[@]}"} \
  model.text.tokenizer="$TOKENIZER" model.visual.drop_path_rate=0.0 \
  train.batch_size=256 train.max_minutes="$MINUTES" train.epochs=100 train.log_every=25 \
  train.ckpt_every="$CKPT_EVERY" train.eval_images=1000 train.progress=false \
  optim.lr=1e-4 optim.visual_lr=1e-4 optim.warmup_steps=200 optim.decay_epochs=[] \
  objectives.itm_negatives=batch objectives.mlm_delay=1000 objectives.mlm_ramp=500 \
  data.num_workers=14 "$@" 2>&1 | grep --line-buffered -v "Warning" | tail -15
for f in summary.json log.jsonl loss_curves.png config.yaml run_info.json; do
  cp "$RUN/$f" "$OUT/"
done
