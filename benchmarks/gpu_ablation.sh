#!/usr/bin/env bash
# The paper's Table 5 ablation (`vlparse ablate`) on one GPU: a 20,000-image scene world, all six
# rows (R50, R101, Swin-T w/o / Rand / attention MFR, patch projection) x 3 seeds = 18 units of
# pre-training + VQA fine-tuning + F^{1,3} probe, the same budget for every row.
#
# Usage: OUT=results_dir bash benchmarks/gpu_ablation.sh [k=v ...]
# TOKENIZER defaults to .devdata/bert-tok when that folder exists (the offline BERT tokenizer
# files carried to the GPU machine), else bert-base-uncased (resolved offline by vlparse).
#
# The whole ablation takes longer than one 10-minute call: each call stops after BUDGET_S
# seconds (default 540; the unit then in flight is lost and redone) and the next call with the
# same settings on the same warm machine goes on where it stopped (WORK keeps the finished
# units; `vlparse ablate` skips them). Every call copies what exists so far to OUT: table5.md and
# table5.json (the finished units), table5.png (only once all units are done), ablation.json
# and units.json (every finished unit's summary.json, keyed "row/seedK"); 5 files, no folders.
#
# Sizing for one H100: ablation-size pre-training runs at about 1,000 images/s (R101 slower, the
# patch row faster), so 150 steps x 256 images ~ 40 s per unit; VQA fine-tuning (one text per
# example) 150 steps x 256 ~ 15 s; model build, held-out evaluation, VQA evaluation, probe and
# checkpoints ~ 20 s: ~75 s x 18 units ~ 23 min (three calls), plus ~1 min to draw the world.
# SEEDS=1 (6 units, ~8 min) fits one call; raise PRETRAIN_STEPS / FINETUNE_STEPS when more time
# is available (a change of steps needs a new WORK: ablation.json records them).
set -euo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-benchmarks/results/ablation_table5_h100}
WORK=${WORK:-/tmp/ablation_table5}
WORLD=${WORLD:-/tmp/world20k}
if [ -z "${TOKENIZER:-}" ]; then
  TOKENIZER=bert-base-uncased
  if [ -d .devdata/bert-tok ]; then TOKENIZER=.devdata/bert-tok; fi
fi
PRETRAIN_STEPS=${PRETRAIN_STEPS:-150}
FINETUNE_STEPS=${FINETUNE_STEPS:-150}
SEEDS=${SEEDS:-3}
BUDGET_S=${BUDGET_S:-540}
mkdir -p "$OUT"
start=$(date +%s)
if [ ! -f "$WORLD/manifest.json" ]; then
  python -m vlparse.cli data synth --out "$WORLD" --images 20000 --workers 16 --image-size 256 \
    2>&1 | tail -1
fi
left=$(( BUDGET_S - ($(date +%s) - start) ))
echo "world ready after $(( $(date +%s) - start )) s; ${left} s left for the ablation"
if [ "$left" -lt 60 ]; then left=60; fi
rc=0
timeout --kill-after=20 "$left" python -m vlparse.cli ablate --data "$WORLD/manifest.json" \
  --out "$WORK" --seeds "$SEEDS" \
  --pretrain-steps "$PRETRAIN_STEPS" --finetune-steps "$FINETUNE_STEPS" \
  --base-config ablation --finetune-config vqa_world --task vqa --probe-samples 300 \
  --no-progress \
  model.text.tokenizer="$TOKENIZER" model.visual.drop_path_rate=0.0 \
  train.batch_size=256 train.log_every=25 train.eval_images=200 data.num_workers=14 \
  optim.lr=1e-4 optim.visual_lr=1e-4 optim.decay_epochs=[] \
  finetune.train.batch_size=256 finetune.train.log_every=25 finetune.data.num_workers=14 \
  finetune.optim.lr=1e-4 finetune.optim.visual_lr=1e-4 finetune.optim.decay_epochs=[] \
  finetune.task.eval_max_images=5000 \
  "$@" 2>&1 | grep --line-buffered -v "Warning" || rc=${PIPESTATUS[0]}
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "stopped at the ${BUDGET_S} s budget: run the same command again to continue"
  rc=0
elif [ "$rc" != 0 ]; then
  echo "vlparse ablate failed (exit $rc)" >&2
fi
echo "ablation call ended after $(( $(date +%s) - start )) s"
# the table, the plot, the experiment's arguments and every finished unit's summary in one file
for f in table5.md table5.json table5.png ablation.json; do
  if [ -f "$WORK/$f" ]; then cp "$WORK/$f" "$OUT/"; fi
done
python - "$WORK" "$OUT/units.json" <<'PY'
import json
import sys
from pathlib import Path

work, out = Path(sys.argv[1]), Path(sys.argv[2])
units = {f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text())
         for p in sorted(work.glob("runs/*/seed*/summary.json"))}
out.write_text(json.dumps(units, indent=1) + "\n")
print(f"{len(units)} units finished: {', '.join(units) or 'none'}")
PY
exit "$rc"
