"""Fine-grained FIBER on the scene world: boxes from phrases after a short fine-grained stage,
started from a coarse-grained run or from the text weights only, each over several seeds, scored
zero-shot on held-out images (grounding R@k, referring-expression accuracy, detection AP) beside
the largest-box and random-box baselines.

    python reports/2026-12-03-scene-world-grounding/measure.py --world WORLD/manifest.json \
        --coarse COARSE_RUN --out OUT --steps STEPS --seeds 0 1 2 --conditions coarse text

Each (condition, seed) is one ``vlparse pretrain --config CONFIG`` run (``--init COARSE_RUN`` for
``coarse``; any other condition, e.g. ``text`` or ``unimodal``, starts from the config's
unimodal sources), then one evaluation per held-out set; ``OUT/runs.jsonl`` gets one line per
finished run, so a stopped measurement keeps what it has. ``--config`` (default
``fiber_fine_tiny``) and ``--set key=value ...`` choose the fine-grained recipe.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vlparse.config import load_config
from vlparse.data.grounding import read_box_source
from vlparse.data.manifest import load_manifest
from vlparse.tasks.grounding import box_dataset
from vlparse.tasks.loading import load_model
from vlparse.tasks.pretrain import run_pretrain
from vlparse.tasks.pretrain_fine import evaluate_box_source

HELD_OUT = {  # name: (manifest data set, split, examples kept)
    "grounding": ("flickr_entities", "test", 100),
    "refexp": ("refcoco", "testA", 150),
    "detection": ("coco_detection", "val", 100),
}


def evaluate_run(model_dir: Path, world: str, cfg) -> dict:
    loaded = load_model(model_dir)
    model = loaded.model
    manifest = load_manifest(world)
    out = {}
    for name, (dataset, split, cap) in HELD_OUT.items():
        src = read_box_source(manifest, dataset, split)
        data = box_dataset([src], model.cfg, loaded.processor.tokenizer, False, max_records=cap)
        data.source = src
        with torch.no_grad():
            out[name] = evaluate_box_source(model, data, cfg, torch.device("cpu"), False)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--world", required=True)
    p.add_argument("--coarse", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--conditions", nargs="+", default=["coarse", "text"])
    p.add_argument("--config", default="fiber_fine_tiny")
    p.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    p.add_argument("--caps", type=int, nargs=3, default=None,
                   help="examples kept of the grounding, refexp and detection sets")
    args = p.parse_args()
    if args.caps:
        for name, cap in zip(HELD_OUT, args.caps, strict=True):
            HELD_OUT[name] = (*HELD_OUT[name][:2], cap)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    for seed in args.seeds:
        for condition in args.conditions:
            run = out / f"{condition}_seed{seed}"
            cfg = load_config(args.config, [*args.set, f"train.max_steps={args.steps}",
                                            f"train.seed={seed}", "train.progress=false"])
            t0 = time.time()
            init = args.coarse if condition == "coarse" else None
            run_pretrain(cfg, args.world, run, evaluate=False, overwrite=True, init=init)
            train_s = time.time() - t0
            metrics = evaluate_run(run / "model", args.world, cfg)
            line = {"condition": condition, "seed": seed, "steps": args.steps,
                    "config": args.config,
                    "init": init, "train_s": train_s, "eval_s": time.time() - t0 - train_s,
                    "metrics": metrics}
            with open(out / "runs.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
