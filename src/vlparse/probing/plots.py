"""Figures of the inter-modality probes (paper Fig. 4 style), drawn without pyplot state."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["plot_imf_from_input", "plot_imf_within_layer", "plot_nmi"]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _line_plot(
    results: Mapping[str, Sequence[float | None]],
    path: str | Path,
    first_x: int,
    xlabel: str,
    ylabel: str,
    title: str,
) -> Path:
    """One line per label over x = ``first_x, first_x + 1, ...``; None/NaN values are gaps."""
    from matplotlib.figure import Figure

    if not results:
        raise ValueError(f"plot: no results to draw into {path}")
    fig = Figure(figsize=(5.5, 3.8), dpi=120)
    ax = fig.add_subplot()
    longest = 0
    for k, (label, values) in enumerate(results.items()):
        ys = [math.nan if v is None else float(v) for v in values]
        xs = list(range(first_x, first_x + len(ys)))
        longest = max(longest, len(ys))
        ax.plot(xs, ys, marker=_MARKERS[k % len(_MARKERS)], label=label, linewidth=1.5)
    ax.set_xticks(list(range(first_x, first_x + longest)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_imf_from_input(results: Mapping[str, Sequence[float | None]], path: str | Path) -> Path:
    """Inter-Modality Flow from the input to layer ``j``, ``F^{1,j}``.

    Args:
        results: ``{model label: [F^{1,1}, ..., F^{1,L}]}``.
        path: output image file (e.g. ``imf_from_input.png``).
    """
    return _line_plot(
        results, path, 1, "layer $j$", "$F_{inter}^{1,j}$", "Inter-modality flow from the input"
    )


def plot_imf_within_layer(results: Mapping[str, Sequence[float | None]], path: str | Path) -> Path:
    """Inter-Modality Flow within each layer, ``F^{i,i}``.

    Args:
        results: ``{model label: [F^{1,1}, ..., F^{L,L}]}``.
        path: output image file (e.g. ``imf_within_layer.png``).
    """
    return _line_plot(
        results, path, 1, "layer $i$", "$F_{inter}^{i,i}$", "Inter-modality flow within a layer"
    )


def plot_nmi(results: Mapping[str, Sequence[float | None]], path: str | Path) -> Path:
    """Modality NMI of the hidden states per layer (layer 0 = embeddings).

    Args:
        results: ``{model label: [NMI_0, ..., NMI_L]}``.
        path: output image file (e.g. ``nmi.png``).
    """
    return _line_plot(
        results,
        path,
        0,
        "layer (0 = embeddings)",
        "NMI(modality, k-means)",
        "Modality clustering of hidden states",
    )
