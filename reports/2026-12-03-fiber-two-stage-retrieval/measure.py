"""Two-stage retrieval against the full ITM ranking on the scene world's retrieval test split.

Usage (from the repository root):
    python reports/2026-12-03-fiber-two-stage-retrieval/measure.py --checkpoint RUN \
        --data WORLD/manifest.json --out results.json --ks 0 10 16

``RUN`` is a FIBER pre-training run (zero-shot: its ITM head scores the pairs) or a retrieval
fine-tuning run; ``k = 0`` is the full ITM ranking. Prints one line per ``k`` and writes the
metrics of each beside the gap of its R@1 to the full ranking's.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess

import torch

from vlparse.tasks.finetune import run_evaluate

KEEP = ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "shortlist_tr_r1",
        "shortlist_ir_r1", "shortlist_tr_r10", "shortlist_ir_r10", "num_images", "num_captions",
        "rerank_k", "pairs_scored", "pairs_all", "parser_s", "scoring_s", "shortlist_s",
        "rerank_s", "pairs_per_s")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--dataset", default="flickr30k")
    p.add_argument("--split", default="test")
    p.add_argument("--ks", type=int, nargs="+", default=[0, 10, 16])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    runs = {}
    for k in args.ks:
        r = run_evaluate("retrieval", args.checkpoint, args.data, args.split,
                         dataset=args.dataset, device="cpu", progress=False,
                         overrides=[f"task.rerank_k={k}", "data.num_workers=0"])
        runs[f"k{k}"] = {key: r[key] for key in KEEP if key in r}
        print(k, json.dumps(runs[f"k{k}"]), flush=True)
    full = runs.get("k0")
    if full is not None:
        for run in runs.values():
            run["tr_r1_gap"] = full["tr_r1"] - run["tr_r1"]
            run["ir_r1_gap"] = full["ir_r1"] - run["ir_r1"]
            run["fewer_pairs"] = full["pairs_scored"] / run["pairs_scored"]
            run["faster_scoring"] = full["scoring_s"] / run["scoring_s"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    record = {"commit": commit, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.machine(), "runs": runs}
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
