#!/usr/bin/env bash
# Issue 4's GPU point: on a 20,000-image scene world, fine-tune each of retrieval, VQA, NLVR2 and
# SNLI-VE twice with the same recipe (`src/vlparse/configs/finetune/<task>_world_gpu.yaml`,
# `ablation` size): once from an `ablation`-size pre-training run and once from random
# initialisation; evaluate both on a held-out split and write, beside the chance / majority
# baseline of that split, `$OUT/finetune_tasks.json` and `$OUT/finetune_tasks.md`.
#
# Usage (repository root, one GPU):
#   INIT=/tmp/pretrain_ablation TASKS="retrieval vqa" bash benchmarks/gpu_finetune_tasks.sh
#   INIT=/tmp/pretrain_ablation TASKS="nlvr2 snli-ve" bash benchmarks/gpu_finetune_tasks.sh
# Extra arguments are key=value overrides of every task's recipe (e.g. train.max_steps=500).
#
# Environment (defaults in brackets):
#   OUT       where the two result files go [benchmarks/results/finetune_tasks_h100]
#   INIT      a `vlparse pretrain` run folder to fine-tune from (e.g. the /tmp/pretrain_ablation
#             of benchmarks/gpu_pretrain_ablation.sh). Unset or without summary.json: an
#             `ablation` pre-training of PRETRAIN_MINUTES minutes runs here (once, cached in WORK).
#   TASKS     ["retrieval vqa nlvr2 snli-ve"]; all four in one call need ~7-9 min (estimate)
#             when the world and INIT exist; otherwise split them over two calls as above.
#   WORLD [/tmp/world20k]  WORK [/tmp/finetune_tasks]  TOKENIZER [.devdata/bert-tok if present]
#   PRETRAIN_MINUTES [3]  FT_MAX_MINUTES [1.5] (time cap of each fine-tuning run; steps come
#   from the recipe, 300)  RET_EVAL_IMAGES [500] (retrieval test images fully ranked, x5
#   captions)  WORKERS [12]  BUDGET_S [560] (a fine-tuning run that could end past this many
#   seconds after the script's start is not started: the task is marked skipped in the JSON and
#   the same call again finishes it).
#
# Caching: the world, the pre-training and every finished (task, variant) evaluation stay in
# /tmp, so a second call on the same warm machine only runs what is missing, and its JSON holds
# every task finished so far. Everything is re-created when absent (a fresh machine).
set -euo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
OUT=${OUT:-benchmarks/results/finetune_tasks_h100}
WORK=${WORK:-/tmp/finetune_tasks}
WORLD=${WORLD:-/tmp/world20k}
if [ -z "${TOKENIZER:-}" ]; then
  TOKENIZER=bert-base-uncased
  if [ -d .devdata/bert-tok ]; then TOKENIZER=.devdata/bert-tok; fi
fi
TASKS=${TASKS:-"retrieval vqa nlvr2 snli-ve"}
INIT=${INIT:-}
PRETRAIN_MINUTES=${PRETRAIN_MINUTES:-3}
FT_MAX_MINUTES=${FT_MAX_MINUTES:-1.5}
RET_EVAL_IMAGES=${RET_EVAL_IMAGES:-500}
WORKERS=${WORKERS:-12}
BUDGET_S=${BUDGET_S:-560}
mkdir -p "$OUT" "$WORK"

if [ ! -f "$WORLD/manifest.json" ]; then
  python -m vlparse.cli data synth --out "$WORLD" --images 20000 --workers 16 --image-size 256 \
    2>&1 | tail -1
fi
echo "world ready after $(( $(date +%s) - START )) s"

if [ -n "$INIT" ] && [ -f "$INIT/summary.json" ]; then
  PRE=$INIT
  PRE_SOURCE="INIT"
else
  if [ -n "$INIT" ]; then
    echo "WARNING: INIT=$INIT has no summary.json (not a finished pre-training run);" \
      "pre-training here for $PRETRAIN_MINUTES minutes instead" >&2
  fi
  PRE=$WORK/pretrain
  PRE_SOURCE="script (${PRETRAIN_MINUTES} min)"
  if [ ! -f "$PRE/summary.json" ]; then
    python -m vlparse.cli pretrain --config ablation --data "$WORLD/manifest.json" --out "$PRE" \
      --resume model.text.tokenizer="$TOKENIZER" model.visual.drop_path_rate=0.0 \
      train.batch_size=256 train.max_minutes="$PRETRAIN_MINUTES" train.epochs=100 \
      train.log_every=50 train.ckpt_every=100000 train.eval_images=500 train.progress=false \
      optim.lr=1e-4 optim.visual_lr=1e-4 optim.warmup_steps=200 optim.decay_epochs=[] \
      data.num_workers=14 2>&1 | grep -v "Warning" | tail -5
  fi
fi
echo "pre-trained run $PRE ($PRE_SOURCE) ready after $(( $(date +%s) - START )) s"

export OUT WORK WORLD TOKENIZER TASKS PRE PRE_SOURCE FT_MAX_MINUTES RET_EVAL_IMAGES WORKERS \
  BUDGET_S START
python - "$@" <<'PY' 2>&1 | grep --line-buffered -v "Warning"
"""Fine-tune (pre-trained and scratch), evaluate, and collect the results of TASKS."""
import dataclasses
import gc
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import yaml

import vlparse
from vlparse.config import FinetuneConfig, PretrainConfig, from_dict, load_config
from vlparse.tasks.finetune import run_evaluate, run_finetune

env = os.environ
START, BUDGET = float(env["START"]), float(env["BUDGET_S"])
WORK, OUT, PRE = Path(env["WORK"]), Path(env["OUT"]), Path(env["PRE"])
MANIFEST = str(Path(env["WORLD"]) / "manifest.json")
FT_MAX_MIN = float(env["FT_MAX_MINUTES"])
RET_IMAGES = int(env["RET_EVAL_IMAGES"])
EXTRA = sys.argv[1:]
# task -> (recipe, evaluated data set, evaluated split)
SPEC = {
    "retrieval": ("retrieval_world_gpu", "flickr30k", "test"),
    "vqa": ("vqa_world_gpu", "vqa", "val"),  # val2014 is held out: trained on train only
    "nlvr2": ("nlvr2_world_gpu", "nlvr2", "test1"),
    "snli-ve": ("snli_ve_world_gpu", "snli_ve", "test"),
}
EVAL_S = 60  # model build + evaluation of one run, a generous guess for the time check


def elapsed() -> float:
    return time.time() - START


def headline(task: str, ev: dict) -> tuple[float | None, float | None, str]:
    """(score, baseline, what) of one evaluation."""
    if task == "retrieval":
        score = (ev["tr_r1"] + ev["ir_r1"]) / 2
        return score, (ev["chance_tr_r1"] + ev["chance_ir_r1"]) / 2, "mean of TR R@1 and IR R@1"
    if task == "vqa":
        return ev["vqa_score"], ev["majority_baseline"], "VQA score (baseline: majority answer)"
    return ev["accuracy"], ev["majority_baseline"], "accuracy (baseline: majority label)"


def log_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if isinstance(v, (int, float))} for r in rows]


def cached(task: str, variant: str, key: dict) -> bool:
    """Whether ``WORK/evals/<task>_<variant>.json`` holds a result made with ``key``."""
    path = WORK / "evals" / f"{task}_{variant}.json"
    return path.is_file() and json.loads(path.read_text()).get("key") == key


def run_variant(task: str, variant: str, cfg: FinetuneConfig, init: Path | None,
                key: dict) -> dict:
    """Fine-tune one variant (cached) and evaluate it on the task's held-out split."""
    _, dataset, split = SPEC[task]
    run_dir = WORK / "runs" / task / variant
    record_file = WORK / "evals" / f"{task}_{variant}.json"
    if cached(task, variant, key):
        print(f"[{elapsed():5.0f} s] {task} {variant}: done earlier, reused", flush=True)
        return json.loads(record_file.read_text())
    if not (run_dir / "summary.json").is_file() or record_file.is_file():
        shutil.rmtree(run_dir, ignore_errors=True)
        print(f"[{elapsed():5.0f} s] {task} {variant}: fine-tune", flush=True)
        gc.collect()
        torch.cuda.empty_cache()
        summary = run_finetune(task, cfg, MANIFEST, run_dir, init=init, evaluate=False)
    else:
        summary = json.loads((run_dir / "summary.json").read_text())
    print(f"[{elapsed():5.0f} s] {task} {variant}: {summary['steps']} steps in "
          f"{summary['wall_s']:.0f} s; evaluate {dataset}/{split}", flush=True)
    ev_ov = [f"data.num_workers={env['WORKERS']}"]
    if task == "retrieval":
        ev_ov.append(f"task.eval_max_images={RET_IMAGES}")
    ev = run_evaluate(task, run_dir, MANIFEST, split, None, dataset=dataset, overrides=ev_ov,
                      progress=False)
    score, base, what = headline(task, ev)
    record = {"key": key, "variant": variant, "init": str(init) if init else None,
              "score": score, "baseline": base, "metric": what, "steps": summary["steps"],
              "examples_seen": summary["examples_seen"], "train_wall_s": summary["wall_s"],
              "eval_wall_s": ev["wall_s"], "eval": ev, "log": log_rows(run_dir)}
    record_file.parent.mkdir(parents=True, exist_ok=True)
    record_file.write_text(json.dumps(record, indent=1) + "\n")
    print(f"[{elapsed():5.0f} s] {task} {variant}: {what} = {score:.4f} (baseline {base:.4f})",
          flush=True)
    return record


def zero_shot(key: dict) -> dict:
    """The pre-trained run's ITM head ranking the retrieval test split without fine-tuning."""
    record_file = WORK / "evals" / "retrieval_zero_shot.json"
    if cached("retrieval", "zero_shot", key):
        return json.loads(record_file.read_text())
    ev = run_evaluate("retrieval", PRE, MANIFEST, "test", None, dataset="flickr30k",
                      overrides=[f"task.eval_max_images={RET_IMAGES}",
                                 f"data.num_workers={env['WORKERS']}"], progress=False)
    score, base, what = headline("retrieval", ev)
    record = {"key": key, "score": score, "baseline": base, "metric": what, "eval": ev}
    record_file.write_text(json.dumps(record, indent=1) + "\n")
    print(f"[{elapsed():5.0f} s] retrieval zero-shot: {what} = {score:.4f}", flush=True)
    return record


def fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown(res: dict) -> str:
    pre = res["pretraining"]
    held = pre.get("held_out") or {}
    lines = [
        "# Fine-tuning on the scene world: pre-trained vs. from scratch (same recipe)",
        "",
        f"World: {res['world']['num_images']:,} images ({res['world']['manifest']}). "
        f"Pre-training: `ablation` model, {pre['steps']} steps, source {pre['source']}, "
        f"held-out ITM accuracy {fmt(held.get('itm_acc'))}, MLM accuracy "
        f"{fmt(held.get('mlm_acc'))}. Device: {res['device']}, torch {res['torch']}.",
        "",
        "| task | metric | eval split | pre-trained + FT | scratch + FT | difference | baseline "
        "| steps (pre / scratch) | train s (pre / scratch) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, t in res["tasks"].items():
        if "skipped" in t:
            lines.append(f"| {task} | skipped: {t['skipped']} | | | | | | | |")
            continue
        p, s = t["pretrained"], t["scratch"]
        ev = p["eval"]
        where = f"{t['dataset']}/{t['split']} ({ev['num_examples']:,})"
        row = (f"| {p['steps']} / {s['steps']} | {p['train_wall_s']:.0f} / "
               f"{s['train_wall_s']:.0f} |")
        lines.append(f"| {task} | {p['metric']} | {where} | {fmt(p['score'])} | "
                     f"{fmt(s['score'])} | {p['score'] - s['score']:+.3f} | "
                     f"{fmt(p['baseline'])} {row}")
        if task == "retrieval":
            for side in ("tr", "ir"):
                vals = [" / ".join(f"{r['eval'][f'{side}_r{k}']:.3f}" for k in (1, 5, 10))
                        for r in (p, s)]
                chance = " / ".join(f"{ev[f'chance_{side}_r{k}']:.3f}" for k in (1, 5, 10))
                lines.append(f"| | {side.upper()} R@1 / R@5 / R@10 | | {vals[0]} | {vals[1]} "
                             f"| | {chance} | | |")
            if "zero_shot" in t:
                z = t["zero_shot"]["eval"]
                lines.append(f"| | zero-shot (pre-trained ITM head, no FT): TR / IR R@1 | | "
                             f"{z['tr_r1']:.3f} / {z['ir_r1']:.3f} | | | | | |")
    lines += ["", f"Recipes: `src/vlparse/configs/finetune/<task>_world_gpu.yaml` with "
              f"overrides {res['overrides']}; each run capped at {FT_MAX_MIN} min. Retrieval "
              f"ranks every one of {RET_IMAGES} test images against all their captions.", ""]
    return "\n".join(lines)


pre_cfg = from_dict(PretrainConfig, yaml.safe_load((PRE / "config.yaml").read_text()) or {})
pre_summary = json.loads((PRE / "summary.json").read_text())
overrides = [f"data.num_workers={env['WORKERS']}", "train.progress=false",
             "train.precision=bf16", f"train.max_minutes={FT_MAX_MIN}", *EXTRA]
results_file = WORK / "finetune_tasks.json"
res = json.loads(results_file.read_text()) if results_file.is_file() else {"tasks": {}}
earlier = res.get("pretraining", {})
if (earlier.get("run"), earlier.get("steps")) != (str(PRE), pre_summary["steps"]):
    res["tasks"] = {}  # another pre-trained model: earlier tasks are not comparable
world = json.loads(Path(MANIFEST).read_text()).get("generator", {})
res.update({
    "description": "fine-tuning from an ablation-size pre-training vs. the same recipe from "
                   "random initialisation, scene world; scores are fractions in [0, 1]",
    "world": {"manifest": MANIFEST, **world},
    "pretraining": {"run": str(PRE), "source": env["PRE_SOURCE"], **pre_summary},
    "overrides": overrides,
    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    "torch": torch.__version__,
    "vlparse": vlparse.__version__,
})
for task in env["TASKS"].split():
    if task not in SPEC:
        raise SystemExit(f"TASKS: unknown task {task!r}; choose from {', '.join(SPEC)}")
    recipe, dataset, split = SPEC[task]
    cfg = load_config(recipe, overrides, cls=FinetuneConfig)
    # the scratch run gets exactly the pre-trained run's architecture (and tokenizer)
    scratch_cfg = dataclasses.replace(cfg, model=pre_cfg.model)
    key = {"pre": str(PRE), "pre_steps": pre_summary["steps"], "recipe": recipe,
           "overrides": overrides, "ret_images": RET_IMAGES}
    entry = {"recipe": recipe, "dataset": dataset, "split": split,
             "batch_size": cfg.train.batch_size, "max_steps": cfg.train.max_steps}
    for variant, c, init in (("pretrained", cfg, PRE), ("scratch", scratch_cfg, None)):
        if not cached(task, variant, key) and elapsed() + FT_MAX_MIN * 60 + EVAL_S > BUDGET:
            print(f"[{elapsed():5.0f} s] {task} {variant}: skipped, not enough of the "
                  f"{BUDGET:.0f} s budget left; call the script again to finish it", flush=True)
            entry = {"skipped": f"{variant} run out of time in this call (budget {BUDGET:.0f} "
                     "s); its finished parts are cached in WORK"}
            break
        record = run_variant(task, variant, c, init, key)
        entry[variant] = {k: x for k, x in record.items() if k != "key"}
    if "skipped" not in entry and task == "retrieval":
        if cached(task, "zero_shot", key) or elapsed() + EVAL_S <= BUDGET:
            entry["zero_shot"] = {k: x for k, x in zero_shot(key).items() if k != "key"}
    if "skipped" in entry and "skipped" not in res["tasks"].get(task, {"skipped": 1}):
        continue  # keep the complete result of an earlier call
    res["tasks"][task] = entry
    text = json.dumps(res, indent=1) + "\n"
    results_file.write_text(text)
    (OUT / "finetune_tasks.json").write_text(text)
    (OUT / "finetune_tasks.md").write_text(markdown(res))
text = json.dumps(res, indent=1) + "\n"
results_file.write_text(text)
(OUT / "finetune_tasks.json").write_text(text)
(OUT / "finetune_tasks.md").write_text(markdown(res))
print(markdown(res))
print(f"wrote {OUT}/finetune_tasks.json and finetune_tasks.md after {elapsed():.0f} s")
PY
