#!/usr/bin/env bash
# FIBER against Visual Parsing on the four coarse tasks at tiny size: the same scene world, each
# family fine-tuned from its own quickstart pre-training for the same number of steps, 3 seeds.
# Usage: bash run.sh WORK VP_INIT FIBER_INIT [STEPS]
#   WORK: holds world/manifest.json (the quickstart world); the runs go there too
#   VP_INIT, FIBER_INIT: the quickstarts' pre-training runs (QS/pretrain, QS_FIBER/pretrain)
set -euo pipefail
WORK=${1:?usage: run.sh WORK VP_INIT FIBER_INIT [STEPS]}
VP=${2:?}
FIBER=${3:?}
STEPS=${4:-150}
for task in retrieval vqa nlvr2 snli_ve; do
  for fam in vp fiber; do
    if [ "$fam" = vp ]; then init=$VP; recipe=${task}_world; else init=$FIBER; recipe=${task}_fiber_world; fi
    for seed in 0 1 2; do
      out="$WORK/ft_${fam}_${task}_${seed}"
      [ -f "$out/summary.json" ] && continue
      /usr/bin/time -f "%e s wall" vlparse finetune "${task//_/-}" --data "$WORK/world/manifest.json" \
        --init "$init" --out "$out" --config "$recipe" "train.seed=$seed" \
        "train.max_steps=$STEPS" train.progress=false > "$out.log" 2>&1
      tail -1 "$out.log"
    done
  done
done
