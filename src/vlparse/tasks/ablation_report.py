"""The report of ``vlparse ablate``: seed statistics and ``table5.{json,md,png}``.

:func:`write_report` turns the contents of ``table5.json`` (built by
:mod:`vlparse.tasks.ablation` from the finished units) into the Markdown table, with the paper's
orderings checked against the seed spread, and the bar plot. :func:`summarize` gives the
per-row statistics (mean +- sample std, ``ddof=1``) that table holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlparse.io.files import atomic_write_json, atomic_write_text

__all__ = ["PAPER_ORDER", "summarize", "write_report"]

# the paper's orderings (section 4.3): (better row, worse row)
PAPER_ORDER = (("swin_nomfr", "r101"), ("r101", "r50"), ("swin_mfr", "swin_randmfr"),
               ("swin_randmfr", "swin_nomfr"))


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "n", "values"}``; ``std`` is the sample std (``ddof=1``), ``None`` for
    ``n < 2``; ``mean`` is ``None`` without values. NaN values are left out of the statistics."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(vals)
    mean = sum(vals) / n if n else None
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n >= 2 else None
    return {"mean": mean, "std": std, "n": n, "values": [float(v) for v in values]}


def _metric_name(key: str | None) -> str:
    return {"vqa_score": "VQA score", "tr_r1": "TR@1"}.get(key or "score", key or "score")


def _fmt(s: dict[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    if s["mean"] is None:
        return "-"
    std = "" if s["std"] is None else f" ± {s['std'] * scale:.{digits}f}"
    return f"{s['mean'] * scale:.{digits}f}{std}"


def _orderings(table: dict[str, Any]) -> list[str]:
    """Markdown lines: the paper's orderings as measured, with the seed spread."""
    rows = table["rows"]
    lines = []
    for hi, lo in PAPER_ORDER:
        if hi not in rows or lo not in rows:
            continue
        parts = []
        for key, name in (("f1L", f"F^{{1,{table['layers']}}}"), ("score", table["metric"])):
            a, b = rows[hi][key], rows[lo][key]
            if a["mean"] is None or b["mean"] is None:
                continue
            diff = a["mean"] - b["mean"]
            se = math.sqrt(sum((s["std"] or 0.0) ** 2 / s["n"] for s in (a, b)))
            verdict = "holds" if diff > 0 else "reversed" if diff < 0 else "tie"
            spread = ("beyond 2 SE of the seed spread" if se > 0 and abs(diff) > 2 * se
                      else "within the seed spread")
            parts.append(f"{name} {diff:+.4f} (SE {se:.4f}): {verdict}, {spread}")
        if parts:
            lines.append(f"- {rows[hi]['label']} > {rows[lo]['label']}: " + "; ".join(parts))
    return lines


def write_report(out_dir: str | Path, table: dict[str, Any], plot: bool = True) -> list[Path]:
    """Write ``table5.json``, ``table5.md`` and (``plot``) ``table5.png``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "table5.json", table)
    L, metric, a = table["layers"], _metric_name(table["metric"]), table["experiment"]
    scale = 100.0 if table["task"] == "vqa" else 1.0
    head = (f"| Row | Backbone | Objectives | Embedder | FLOPs (G) | Params (M) | F^{{1,{L}}} | "
            f"{metric}{' (x100)' if scale != 1 else ''} | n | paper FLOPs (G) | paper Params (M) | "
            "paper F^{1,3} | paper VQA dev | paper VQA std |")
    lines = [
        "# Table 5 reproduced (Visual Parsing, section 4.3)", "",
        f"Pre-training `{a['base_config']}` for {a['pretrain_steps']} steps, fine-tuning "
        f"`{a['task']}` (`{a['finetune_config']}`) for {a['finetune_steps']} steps, seeds "
        f"{table['seeds']}; overrides: `{' '.join(a['overrides']) or 'none'}`"
        f"{'; tiny row variants' if a['tiny'] else ''}.", "",
        head, "|" + "---|" * 14,
    ]
    for name, r in table["rows"].items():
        v, p = r["visual"], r["paper"]
        paper = ([f"{p['flops_g']:.1f}", f"{p['params_m']:.1f}", f"{p['f13']:.3f}",
                  f"{p['vqa_dev']:.2f}", f"{p['vqa_std']:.2f}"] if p else ["-"] * 5)
        embedder = v["arch"] or f"patch {v['patch_size']}"
        embedder += f" @{v['image_size']}px, {v['tokens']} tokens"
        cells = [f"`{name}`", r["backbone"], r["objectives"], embedder, f"{v['gmacs']:.3g}",
                 f"{v['params_m']:.3g}", _fmt(r["f1L"]), _fmt(r["score"], scale, 2),
                 str(r["score"]["n"]), *paper]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "", f"FLOPs (G) are GMACs (multiply-adds) of the visual embedder per image at its image "
        "size, as in the paper; Params (M) count the visual embedder only, headless (the paper's "
        "ResNet counts include the 2.05 M ImageNet classifier). F^{1,L}: "
        "Inter-Modality Flow from the input to the last multi-modal layer on "
        f"{a['probe_samples']} held-out pairs. Values: mean ± sample std (ddof=1) over n seeds. "
        "The paper's columns come from COCO/VG/SBU/CC pre-training and VQA v2 test-dev/-std (in "
        "%): compare orderings, not absolute values.", "",
        "## The paper's orderings, as measured", "",
        *(_orderings(table) or ["- (needs the rows of both sides of an ordering)"]), "",
    ]
    atomic_write_text(out / "table5.md", "\n".join(lines))
    paths = [out / "table5.json", out / "table5.md"]
    if plot:
        paths.append(_plot(table, out / "table5.png", scale))
    return paths


def _plot(table: dict[str, Any], path: Path, scale: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(table["rows"].values())
    # "Swin-T\nRand MFR": the objectives beyond the shared MLM+ITM keep the labels short
    labels = [f"{r['backbone']}\n{r['objectives'][7:].lstrip(' ,+') or 'MLM+ITM'}" for r in rows]
    name = _metric_name(table["metric"])
    panels = (("score", f"{name}{' (x100)' if scale != 1 else ''}", scale),
              ("f1L", f"IMF $F^{{1,{table['layers']}}}$", 1.0))
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 2.2 * len(rows)), 4.8))
    for ax, (key, title, k) in zip(axes, panels, strict=True):
        x = list(range(len(rows)))
        means = [(r[key]["mean"] or 0.0) * k for r in rows]
        stds = [(r[key]["std"] or 0.0) * k for r in rows]
        ax.bar(x, means, yerr=stds, capsize=5, color=[f"C{i}" for i in x], alpha=0.8)
        for i, r in enumerate(rows):
            pts = [v * k for v in r[key]["values"] if v is not None]
            ax.plot([i] * len(pts), pts, "k.", ms=6)
        lo = min((v * k for r in rows for v in r[key]["values"] if v is not None), default=0.0)
        hi = max((v * k for r in rows for v in r[key]["values"] if v is not None), default=1.0)
        pad = max((hi - lo) * 0.5, 1e-3)
        bottom = max(0.0, lo - pad)
        ax.set_ylim(bottom, hi + pad)
        ax.set_xticks(x, labels, fontsize=8)
        note = " (axis not from 0)" if bottom > 0 else ""
        ax.set_title(f"{title}\nmean ± std over seeds, dots: seeds{note}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    a = table["experiment"]
    fig.suptitle(f"Table 5 ablation: {a['base_config']}, {a['pretrain_steps']} pre-training + "
                 f"{a['finetune_steps']} {a['task']} steps, seeds {table['seeds']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
