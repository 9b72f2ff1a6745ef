#!/usr/bin/env bash
# Captioning on the scene world from the FIBER quickstart's coarse pre-training against the same
# model without vision-language pre-training; greedy against beam 5; a CIDEr-D stage against as
# many more MLE steps; the nearest-neighbour baseline.
# Usage: bash run.sh QS WORK [MLE_STEPS] [MORE_STEPS]
#   QS: a `vlparse quickstart --model fiber` folder (its world, tokenizer and pretrain run)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
QS=${1:?usage: run.sh QS WORK [MLE_STEPS] [MORE_STEPS]}
WORK=${2:?}
MLE=${3:-300}
MORE=${4:-50}
M="$QS/world/manifest.json"
mkdir -p "$WORK/runs" "$WORK/eval"
VOCAB=$(wc -l < "$QS/tokenizer/vocab.txt")
[ -d "$WORK/runs/unimodal" ] || python "$HERE/../2026-12-03-scene-world-captioning/unimodal_init.py" "$WORK/runs/unimodal" \
  fiber_quickstart "model.text.tokenizer=$QS/tokenizer" "model.text.vocab_size=$VOCAB"
ft() { [ -f "$WORK/runs/$2/summary.json" ] || vlparse finetune caption --config caption_world \
  --data "$M" --init "$1" --out "$WORK/runs/$2" --no-eval train.progress=false "${@:3}"; }
ft "$QS/pretrain" mle_coarse "train.max_steps=$MLE"
ft "$WORK/runs/unimodal" mle_unimodal "train.max_steps=$MLE"
LATE=(optim.lr=2.0e-5 optim.warmup_steps=0 "train.max_steps=$MORE")
ft "$WORK/runs/mle_coarse" scst_coarse "${LATE[@]}" task.scst_weight=0.7
ft "$WORK/runs/mle_coarse" mle_coarse_more "${LATE[@]}"
for run in mle_coarse mle_unimodal scst_coarse mle_coarse_more; do
  for beams in 1 5; do
    out="$WORK/eval/${run}_beam${beams}.json"
    [ -f "$out" ] || vlparse evaluate caption --checkpoint "$WORK/runs/$run" --data "$M" \
      --split test --out "$out" --beams "$beams"
  done
done
python "$HERE/../2026-12-03-scene-world-captioning/nearest_neighbour.py" "$QS/pretrain" "$M" test \
  "$WORK/eval/nearest_neighbour.json"
