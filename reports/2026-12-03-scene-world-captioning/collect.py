"""Gather the evaluation JSONs of the scene-world captioning runs into ``results.json``.

    python reports/2026-12-03-scene-world-captioning/collect.py EVAL_DIR RUNS_DIR

``EVAL_DIR`` holds ``<condition>.json`` written by ``vlparse evaluate caption`` (and
``nearest_neighbour.json`` by ``nearest_neighbour.py``); ``RUNS_DIR`` the run folders, whose
``summary.json`` give the steps and wall time.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
METRICS = ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


def main(eval_dir: str, runs_dir: str) -> None:
    results = {}
    for path in sorted(Path(eval_dir).glob("*.json")):
        if path.stem.endswith("_captions"):
            continue
        data = json.loads(path.read_text())
        metrics = data.get("metrics", data)
        captions_file = path.with_name(f"{path.stem}_captions.json")
        rows = data.get("results") or (json.loads(captions_file.read_text())
                                       if captions_file.exists() else [])
        results[path.stem] = {
            **{k: metrics[k] for k in METRICS if k in metrics},
            "num_images": data.get("num_examples", data.get("num_images")),
            "tokenizer": data["tokenizer"],
            "num_beams": data.get("num_beams"),
            "distinct_captions": len({r["caption"] for r in rows}),
        }
    runs = {}
    for summary in sorted(Path(runs_dir).glob("*/summary.json")):
        s = json.loads(summary.read_text())
        runs[summary.parent.name] = {k: s.get(k) for k in ("steps", "wall_s", "init", "task")}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    payload = json.loads((HERE / "results.json").read_text())
    payload.update({
        "commit": commit,
        "hardware": f"{platform.machine()} CPU, 2 cores shared with other jobs",
        "software": {"torch": torch.__version__, "python": platform.python_version()},
        "results": {"test_split": results, "runs": runs},
    })
    (HERE / "results.json").write_text(json.dumps(payload, indent=1) + "\n")
    print(json.dumps(payload["results"], indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
