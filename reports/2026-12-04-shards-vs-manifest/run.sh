#!/usr/bin/env bash
# The quickstart's pre-training from the manifest and from WebDataset shards of the same scene
# world, training seeds 0 and 1, no VQA stage. Usage: bash run.sh WORK (a folder for the runs).
set -euo pipefail
WORK=${1:?usage: run.sh WORK}
mkdir -p "$WORK"
# one world (the quickstart's: 3,000 images, seed 0), drawn once and shared by every run
vlparse data synth --out "$WORK/world" --images 3000 --seed 0 --image-size 128
echo '{"num_images": 3000, "seed": 0}' > "$WORK/world/quickstart_stamp.json"
vlparse data shard --data "$WORK/world/manifest.json" --out "$WORK/world/shards" --maxcount 500
for seed in 0 1; do
  for fmt in manifest shards; do
    out="$WORK/qs_${fmt}_${seed}"
    mkdir -p "$out" && ln -sfn "$(cd "$WORK/world" && pwd)" "$out/world"
    extra=()
    [ "$fmt" = shards ] && extra=(data.format=shards "data.shards=$WORK/world/shards")
    /usr/bin/time -f "%e s wall" vlparse quickstart --out "$out" --vqa-steps 0 \
      "train.seed=$seed" "${extra[@]}" 2>&1 | tee "$out.log"
  done
done
