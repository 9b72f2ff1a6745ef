#!/usr/bin/env bash
# The GPU evidence command (see benchmarks/gpu_evidence.py): every GPU measurement of the project
# in at most 9 minutes on one GPU, written as at most 8 small files under OUTDIR.
#
# Usage (repository root):
#   bash benchmarks/gpu_evidence.sh OUTDIR [--parts ablation] [--wheels .whl] [--cpu-smoke]
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: bash benchmarks/gpu_evidence.sh OUTDIR [options of benchmarks/gpu_evidence.py]" >&2
  exit 2
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" benchmarks/gpu_evidence.py "$@"
