"""Gather the ``runs.jsonl`` lines of ``measure.py`` into ``results.json`` (per condition, and per
step budget when the runs have several: each seed's numbers, their mean and spread).

    python reports/2026-12-03-scene-world-grounding/summarise.py OUT/runs.jsonl ... \
        --commit COMMIT --out reports/2026-12-03-scene-world-grounding/results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

KEYS = {
    "grounding": ["recall@1", "recall@5", "recall@10", "largest_box_recall@1",
                  "random_box_recall@1", "num_phrases"],
    "refexp": ["accuracy_iou", "accuracy_giou", "largest_box_accuracy_iou",
               "random_box_accuracy_iou", "num_examples"],
    "detection": ["AP", "AP50", "AP75", "largest_box_AP", "random_box_AP", "num_examples"],
}


def spread(values: list[float]) -> dict:
    out = {"mean": statistics.fmean(values), "n": len(values), "values": values}
    if len(values) > 1:
        out["std"] = statistics.stdev(values)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+")
    p.add_argument("--commit", required=True)
    p.add_argument("--out", required=True)
    # another report's metadata (the defaults are this report's)
    p.add_argument("--topic")
    p.add_argument("--date")
    p.add_argument("--question")
    p.add_argument("--hardware")
    p.add_argument("--command", action="append", help="a command of the report (repeatable)")
    args = p.parse_args()
    lines = [json.loads(x) for f in args.runs for x in Path(f).read_text().splitlines() if x]
    by: dict[str, list[dict]] = defaultdict(list)
    budgets = {line["steps"] for line in lines}
    for line in lines:  # one entry per start, and per budget when the runs have several
        key = line["condition"] + (f"_{line['steps']}_steps" if len(budgets) > 1 else "")
        by[key].append(line)
    results = {}
    for condition, runs in by.items():
        entry = {"seeds": [r["seed"] for r in runs], "steps": runs[0]["steps"],
                 "config": runs[0].get("config", "fiber_fine_tiny"),
                 "train_s": [round(r["train_s"]) for r in runs]}
        for task, keys in KEYS.items():
            entry[task] = {k: spread([r["metrics"][task][k] for r in runs]) for k in keys}
        results[f"from_{condition}"] = entry
    doc = {
        "topic": args.topic or "scene-world-grounding",
        "question": args.question or (
            "How well does a briefly fine-grained fiber_tiny ground phrases, find referred "
            "objects and detect prompted shapes on held-out scene-world images, beside the "
            "largest-box and random-box baselines?"),
        "date": args.date or "2026-12-03", "commit": args.commit, "dirty": False,
        "hardware": args.hardware or "2 CPU cores, shared with other jobs (load average 10-15)",
        "commands": args.command or [
            "vlparse data synth --out WORLD --images 1500 --seed 0 --image-size 256",
            "python reports/2026-12-03-scene-world-grounding/measure.py --world "
            "WORLD/manifest.json --out OUT --steps 100 --seeds 0 --conditions text "
            "--caps 60 100 60",
            "python reports/2026-12-03-scene-world-grounding/summarise.py OUT/runs.jsonl "
            "--commit COMMIT --out reports/2026-12-03-scene-world-grounding/results.json",
        ],
        "results": results,
    }
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
