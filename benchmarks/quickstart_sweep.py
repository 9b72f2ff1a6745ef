"""Run several variants of the quickstart pre-training side by side on one GPU and report how
held-out ITM accuracy grows with the step count for each.

The CPU quickstart affords about 400-800 steps; this sweep shows which settings leave the ITM
plateau within that budget, so they can then be checked on the CPU itself. Each variant is a
``vlparse pretrain --config quickstart`` process with its own overrides; the processes share the
GPU. Results: ``OUT/sweep.json`` (per variant: the held-out metrics at every evaluation) and the
runs' logs.

    python benchmarks/quickstart_sweep.py --out results/sweep --steps 2000 \
        --variant base: --variant lr1e-3:optim.lr=1e-3,optim.visual_lr=1e-4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``name:key=value,key=value`` -> (name, overrides)."""
    name, _, rest = text.partition(":")
    return name, [o for o in rest.split(",") if o]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=None, help="manifest.json (default: a new quickstart world)")
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--config", default="quickstart")
    p.add_argument("--variant", action="append", required=True, help="name:key=value,...")
    p.add_argument("--common", default="", help="overrides for every variant, comma-separated")
    p.add_argument("--workers", type=int, default=1, help="data workers per variant")
    args = p.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = args.data
    if manifest is None:
        world = Path("/tmp/quickstart_sweep_world")
        manifest = str(world / "manifest.json")
        if not Path(manifest).exists():
            subprocess.run(
                [sys.executable, "-m", "vlparse.cli", "data", "synth", "--out", str(world),
                 "--images", str(args.images), "--image-size", "128",
                 "--workers", str(os.cpu_count() or 1)],
                check=True,
            )
    common = [o for o in args.common.split(",") if o]
    procs = {}
    t0 = time.time()
    for text in args.variant:
        name, overrides = parse_variant(text)
        run = out / name
        cmd = [
            sys.executable, "-m", "vlparse.cli", "pretrain", "--config", args.config,
            "--data", manifest, "--out", str(run),
            f"train.max_steps={args.steps}", f"train.eval_every={args.eval_every}",
            "train.progress=false", "train.ckpt_every=1000000", "train.precision=fp32",
            f"data.num_workers={args.workers}", *common, *overrides,
        ]
        log = open(out / f"{name}.log", "w")
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
    for name, (proc, log) in procs.items():
        proc.wait()
        log.close()
        print(f"{name}: exit {proc.returncode} after {time.time() - t0:.0f} s", flush=True)

    results = {}
    for text in args.variant:
        name, overrides = parse_variant(text)
        rows = []
        log_file = out / name / "log.jsonl"
        if log_file.exists():
            for line in log_file.read_text().splitlines():
                r = json.loads(line)
                if "val/itm_acc" in r:
                    rows.append({k.removeprefix("val/"): v for k, v in r.items()})
        summary = out / name / "summary.json"
        results[name] = {
            "overrides": overrides,
            "evals": rows,
            "final": json.loads(summary.read_text())["held_out"] if summary.exists() else None,
        }
    (out / "sweep.json").write_text(json.dumps(
        {"config": args.config, "steps": args.steps, "common": common, "variants": results},
        indent=1) + "\n")
    for name, r in results.items():
        itm = [(e["step"], round(e["itm_acc"], 3)) for e in r["evals"]]
        print(name, itm, flush=True)


if __name__ == "__main__":
    main()
