#!/usr/bin/env bash
# The trainer on CUDA, as a smoke test (not a measurement): `torchrun --nproc_per_node 1 -m vlparse
# pretrain --config tiny` runs 20 steps on a scene world drawn by `vlparse data synth`, then resumes
# for 5 more; before that, a process group of the kind `init_distributed` makes on CUDA
# (`cpu:gloo,cuda:nccl`) all-reduces a CPU and a CUDA tensor and gathers bytes, the collectives of
# the trainer (one rank: torchrun with one process makes no group of its own). With 2 or more
# GPUs it also runs the 20 steps in 2 processes (DDP over NCCL).
#
# Usage (repository root, one GPU; about 2 minutes, mostly start-up):
#   bash benchmarks/gpu_smoke.sh 2>&1 | tee $OUT/gpu_smoke.log
# Extra arguments are key=value overrides of the pre-training config.
#
# Environment (defaults in brackets): PYTHON [python3]; OUT, where gpu_smoke.json goes [gpu_smoke];
# WORK, the world and the runs [a new temporary folder]; IMAGES [400]; WORKERS [8];
# STEPS, the first run's steps [20]; MORE, the steps the resumed run adds [5];
# SMOKE_DEVICE=cpu runs the same on the CPU (no CUDA group check), as a test of this script.
#
# It checks, and stops at the first failure: the group's collectives on both devices; 20 steps
# with a checkpoint, summary.json and a log on cuda; the resumed run reaching step 25.
set -euo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-gpu_smoke}
WORK=${WORK:-$(mktemp -d -t vlparse-gpu-smoke.XXXXXX)}
IMAGES=${IMAGES:-400}
WORKERS=${WORKERS:-8}
STEPS=${STEPS:-20}
MORE=${MORE:-5}
SMOKE_DEVICE=${SMOKE_DEVICE:-cuda}
PY=${PYTHON:-python3}  # the interpreter that holds torch (GPU images may have no plain python)
mkdir -p "$OUT" "$WORK"

if [ "$SMOKE_DEVICE" = cuda ]; then
"$PY" - <<'PY'
"""A 1-rank group of the kind init_distributed makes on CUDA: collectives on CPU and CUDA."""
import os

import torch
import torch.distributed as dist

from vlparse.train.distributed import all_gather_bytes, all_reduce_sum, backend_for

os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
device = torch.device("cuda", 0)
torch.cuda.set_device(device)
dist.init_process_group(backend_for(device), rank=0, world_size=1, device_id=device)
print("backend", dist.get_backend_config())
for t in (torch.ones(2), torch.ones(2, device=device)):
    dist.all_reduce(t)
    assert t.tolist() == [1.0, 1.0], t
print("all_reduce on cpu and cuda: ok")
assert all_reduce_sum(torch.ones(1, device=device)).item() == 1.0
dist.destroy_process_group()
assert all_gather_bytes(b"abc", device) == [b"abc"]
print("group check passed")
PY
fi

if [ ! -f "$WORK/world/manifest.json" ]; then
  "$PY" -m vlparse data synth --out "$WORK/world" --images "$IMAGES" --image-size 96 \
    --workers "$WORKERS" | tail -1
fi
DATA=(--config tiny --data "$WORK/world/manifest.json")
# key=value overrides go last, after every option
RUN=("$PY" -m torch.distributed.run)  # torchrun, from the interpreter that holds torch
SETS=(train.batch_size=16 train.log_every=5 train.ckpt_every=10 train.progress=false
      train.eval_images=64 data.num_workers=4)

"${RUN[@]}" --nproc_per_node 1 -m vlparse pretrain "${DATA[@]}" --out "$WORK/run1" --overwrite \
  "${SETS[@]}" train.max_steps="$STEPS" "$@"
"${RUN[@]}" --nproc_per_node 1 -m vlparse pretrain "${DATA[@]}" --out "$WORK/run1" --resume \
  "${SETS[@]}" train.max_steps=$((STEPS + MORE)) "$@"
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -ge 2 ]; then
  "${RUN[@]}" --nproc_per_node 2 -m vlparse pretrain "${DATA[@]}" --out "$WORK/run2" --overwrite \
    "${SETS[@]}" train.max_steps=20 "$@"
fi

export WORK OUT NGPU STEPS MORE SMOKE_DEVICE
"$PY" - <<'PY'
"""Collect what the runs wrote into $OUT/gpu_smoke.json, checking it on the way."""
import json
import os
import subprocess
from pathlib import Path

import torch

work, out = Path(os.environ["WORK"]), Path(os.environ["OUT"])
steps, more = int(os.environ["STEPS"]), int(os.environ["MORE"])
runs = {"run1": steps + more} | ({"run2": steps} if int(os.environ["NGPU"]) >= 2 else {})
cuda = os.environ["SMOKE_DEVICE"] == "cuda"
result = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
          "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                   text=True).stdout.strip(), "runs": {}}
for name, steps in runs.items():
    run = work / name
    summary = json.loads((run / "summary.json").read_text())
    info = json.loads((run / "run_info.json").read_text())
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert summary["steps"] == steps, summary
    assert info["cuda_available"] or not cuda, info
    logged = [r["step"] for r in log if "loss" in r]
    assert logged == sorted(set(logged)), logged  # each step once, also after the resume
    result["runs"][name] = {"steps": summary["steps"], "world_size": summary["world_size"],
                            "wall_s": summary["wall_s"], "loss": [r["loss"] for r in log
                                                                  if "loss" in r],
                            "held_out": summary.get("held_out")}
(out / "gpu_smoke.json").write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps(result, indent=2))
print("gpu smoke passed")
PY
