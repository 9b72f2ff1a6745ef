"""A figure of boxes on an image, each labelled with the phrase it grounds (one colour a phrase).

Drawn on a ``matplotlib.figure.Figure`` (no pyplot state), so it is safe in worker processes and
without a display. It lives in :mod:`vlparse.eval` because it shows predictions against their
image, as the metrics do; the API's ``ground``/``detect`` and the figure command, above the task
layer, call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

__all__ = ["draw_grounding"]


def _as_array(image) -> np.ndarray:
    """PIL image, ``(H, W, 3)`` array or ``(3, H, W)`` tensor in [0, 1] -> ``(H, W, 3)`` array."""
    if isinstance(image, Tensor):
        return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return np.asarray(image)


def draw_grounding(
    image,
    boxes: Tensor | Sequence[Sequence[float]],
    labels: Sequence[str],
    scores: Sequence[float] | Tensor | None = None,
    path: str | Path | None = None,
    title: str | None = None,
):
    """Draw xyxy ``boxes`` ``(N, 4)`` on ``image`` with their ``labels`` (and scores).

    Args:
        image: a PIL image, an ``(H, W, 3)`` array, or a ``(3, H, W)`` tensor in [0, 1].
        boxes: ``(N, 4)`` xyxy in the image's pixels.
        labels: ``N`` phrases; boxes of the same phrase share a colour.
        scores: optional ``N`` scores, printed after the phrase.
        path: if given, the figure is saved there (PNG by suffix; folders created).
        title: optional title (e.g. the caption).

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    boxes = [list(map(float, b)) for b in (boxes.tolist() if isinstance(boxes, Tensor) else boxes)]
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    if scores is not None:
        scores = scores.tolist() if isinstance(scores, Tensor) else list(scores)
        if len(scores) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    array = _as_array(image)
    height, width = array.shape[:2]
    fig = Figure(figsize=(6.0, 6.0 * height / max(width, 1) + (0.4 if title else 0.0)), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(array)
    palette = colormaps["tab10" if len(set(labels)) <= 10 else "tab20"]
    colours = {lab: palette(k % palette.N) for k, lab in enumerate(dict.fromkeys(labels))}
    for k, ((x1, y1, x2, y2), label) in enumerate(zip(boxes, labels, strict=True)):
        colour = colours[label]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour,
                               linewidth=2))
        text = label if scores is None else f"{label} {scores[k]:.2f}"
        ax.text(x1, y1, text, fontsize=8, color="white", va="bottom",
                bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "edgecolor": "none"})
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return fig
