"""The figure of this report: each held-out metric against the fine-grained budget, from the
coarse-grained run and from unimodal weights (mean and the seeds' spread), beside the
largest-box and random-box baselines.

    python reports/2026-12-04-fine-grained-from-coarse/plot.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
PANELS = [("grounding", "recall@1", "largest_box_recall@1", "random_box_recall@1",
           "grounding R@1 (flickr_entities test)"),
          ("refexp", "accuracy_iou", "largest_box_accuracy_iou", "random_box_accuracy_iou",
           "referring expressions, accuracy (refcoco testA)"),
          ("detection", "AP", "largest_box_AP", "random_box_AP", "detection AP (coco val)")]
STARTS = {"coarse": ("from the coarse-grained run", "tab:blue"),
          "unimodal": ("from unimodal weights", "tab:orange")}


def main() -> None:
    results = json.loads((HERE / "results.json").read_text())["results"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (task, key, largest, rand, title) in zip(axes, PANELS, strict=True):
        for start, (label, colour) in STARTS.items():
            runs = sorted((v for k, v in results.items() if k.startswith(f"from_{start}_")),
                          key=lambda v: v["steps"])
            steps = [r["steps"] for r in runs]
            mean = [r[task][key]["mean"] for r in runs]
            err = [r[task][key].get("std", 0.0) for r in runs]
            ax.errorbar(steps, mean, yerr=err, marker="o", capsize=3, label=label, color=colour)
            for r in runs:
                ax.scatter([r["steps"]] * len(r[task][key]["values"]), r[task][key]["values"],
                           s=8, color=colour, alpha=0.4)
        any_run = next(iter(results.values()))[task]
        ax.axhline(any_run[largest]["mean"], ls="--", color="grey", label="largest box")
        ax.axhline(any_run[rand]["mean"], ls=":", color="grey", label="random box")
        ax.set_xscale("log")
        ax.set_xlabel("fine-grained steps (batch 16)")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "metrics_by_budget.png", dpi=110)


if __name__ == "__main__":
    main()
