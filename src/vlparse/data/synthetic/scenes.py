"""Scene sampling and geometry of the synthetic scene world.

A scene is 2-6 flat shapes (shape, colour, size class, centre) on a textured background. Shapes'
bounding boxes never overlap. Everything about a scene (including the background texture) is a
function of the numpy generator it is sampled from, so ``sample_scene(np.random.default_rng([seed,
index]), size)`` is reproducible.

Relations are *tri-state*: :func:`relation` returns ``True`` when the relation clearly holds,
``False`` when it clearly does not, and ``None`` when the picture leaves it ambiguous (e.g. two
centres almost on the same vertical line for "left of"). Language generators only state clear facts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = [
    "COLORS",
    "SHAPES",
    "SIZES",
    "RELATIONS",
    "BACKGROUNDS",
    "SceneObject",
    "Scene",
    "sample_scene",
    "shape_polygon",
    "relation",
    "exists_relation",
    "matches",
    "select",
]

#: Object colours: name -> RGB.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 225),
    "yellow": (250, 215, 25),
    "purple": (140, 45, 185),
    "orange": (250, 130, 15),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
#: Shape names (singular; plurals add "s", or "es" after a final "s").
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
#: Size classes and their half-extent range as a fraction of the image side.
SIZES: dict[str, tuple[float, float]] = {"small": (0.06, 0.07), "large": (0.12, 0.14)}
#: Binary relations between two objects.
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below", "bigger than",
                              "smaller than", "next to")
#: Background texture kinds, named by the adjective the captions use.
BACKGROUNDS: tuple[str, ...] = ("striped", "checkered", "grainy", "shaded")

_CLEAR_AXIS = 0.04  # |dx| or |dy| above this fraction of the side: left/right/above/below is clear
_NEXT_TO = 0.12  # gap between boxes below this fraction: "next to" holds
_FAR = 0.30  # gap above this fraction: "next to" clearly does not hold


@dataclass(frozen=True)
class SceneObject:
    """One drawn shape; ``cx, cy, r`` in pixels (``r`` is the half-extent of the shape)."""

    shape: str
    color: str
    size: str
    cx: float
    cy: float
    r: float

    @cached_property
    def bbox(self) -> tuple[float, float, float, float]:
        """Tight box ``[x, y, w, h]`` of the drawn polygon (pixels)."""
        pts = shape_polygon(self.shape, self.cx, self.cy, self.r)
        xs, ys = pts[:, 0], pts[:, 1]
        x0, y0 = float(xs.min()), float(ys.min())
        return (x0, y0, float(xs.max()) - x0, float(ys.max()) - y0)


@dataclass(frozen=True)
class Scene:
    """Objects plus the background recipe; ``bg_colors`` are two RGB triples."""

    size: int
    objects: tuple[SceneObject, ...]
    background: str
    bg_colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    bg_period: float
    bg_angle: float
    bg_seed: int


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Vertices ``(P, 2)`` (x, y) of ``shape`` centred at ``(cx, cy)`` with half-extent ``r``.

    Circles are approximated with 32 vertices (used for boxes and segmentations; the renderer
    draws a true ellipse with the same box).
    """
    if shape == "circle":
        t = np.linspace(0.0, 2 * math.pi, 32, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    elif shape == "triangle":
        pts = np.array([[0, -1], [1, 1], [-1, 1]], dtype=float)
    elif shape == "diamond":
        pts = np.array([[0, -1], [0.8, 0], [0, 1], [-0.8, 0]], dtype=float)
    elif shape == "star":
        t = -math.pi / 2 + np.arange(10) * math.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([rad * np.cos(t), rad * np.sin(t)], 1)
        pts[:, 1] += (1 - pts[:, 1].max()) / 2  # centre the star vertically in its box
    elif shape == "cross":
        a = 0.33
        pts = np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1],
                        [-a, a], [-1, a], [-1, -a], [-a, -a]], dtype=float)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    return pts * r + np.array([cx, cy])


def _boxes_clear(a: tuple[float, ...], b: tuple[float, ...], margin: float) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return (ax + aw + margin <= bx or bx + bw + margin <= ax
            or ay + ah + margin <= by or by + bh + margin <= ay)


def sample_scene(rng: np.random.Generator, size: int = 256) -> Scene:
    """Draw a scene of 2-6 non-overlapping objects on a random background.

    Args:
        rng: the scene's generator (e.g. ``np.random.default_rng([seed, index])``).
        size: image side in pixels.
    """
    n = int(rng.integers(2, 7))
    colors, shapes = list(COLORS), list(SHAPES)
    objects: list[SceneObject] = []
    margin = 0.02 * size
    for _ in range(n):
        shape = shapes[int(rng.integers(len(shapes)))]
        color = colors[int(rng.integers(len(colors)))]
        size_cls = "large" if rng.random() < 0.4 else "small"
        placed = None
        for attempt in range(60):
            if attempt == 30:
                size_cls = "small"  # crowded: retry with a small object
            lo, hi = SIZES[size_cls]
            r = float(rng.uniform(lo, hi)) * size
            cx = float(rng.uniform(r + margin, size - r - margin))
            cy = float(rng.uniform(r + margin, size - r - margin))
            cand = SceneObject(shape, color, size_cls, round(cx, 2), round(cy, 2), round(r, 2))
            if all(_boxes_clear(cand.bbox, o.bbox, margin) for o in objects):
                placed = cand
                break
        if placed is not None:
            objects.append(placed)
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    base = rng.uniform(90, 170, size=3)
    other = np.clip(base + rng.uniform(-45, 45, size=3), 60, 200)
    bg_colors = (tuple(int(v) for v in base), tuple(int(v) for v in other))
    return Scene(size=size, objects=tuple(objects), background=background,
                 bg_colors=bg_colors,  # type: ignore[arg-type]
                 bg_period=float(rng.uniform(0.06, 0.2)) * size,
                 bg_angle=float(rng.uniform(0, math.pi)),
                 bg_seed=int(rng.integers(2**31 - 1)))


def relation(rel: str, a: SceneObject, b: SceneObject, size: int) -> bool | None:
    """Whether ``a <rel> b`` holds: ``True`` clearly, ``False`` clearly not, ``None`` ambiguous.

    ``size`` is the image side; position relations compare centres with a dead zone of 4% of it
    (image y grows downwards). Size relations compare size classes; a same-class comparison is
    ambiguous, so "bigger than" is only clearly false for a small ``a`` and a large ``b``.
    """
    tau = _CLEAR_AXIS * size
    if rel in ("left of", "right of", "above", "below"):
        d = {"left of": b.cx - a.cx, "right of": a.cx - b.cx,
             "above": b.cy - a.cy, "below": a.cy - b.cy}[rel]
        return True if d > tau else False if d < -tau else None
    if rel in ("bigger than", "smaller than"):
        big, small = (a, b) if rel == "bigger than" else (b, a)
        if big.size == "large" and small.size == "small":
            return True
        if big.size == "small" and small.size == "large":
            return False
        return None
    if rel == "next to":
        ax, ay, aw, ah = a.bbox
        bx, by, bw, bh = b.bbox
        gap = max(bx - (ax + aw), ax - (bx + bw), by - (ay + ah), ay - (by + bh), 0.0)
        return True if gap < _NEXT_TO * size else False if gap > _FAR * size else None
    raise ValueError(f"unknown relation {rel!r}; expected one of {', '.join(RELATIONS)}")


def matches(obj: SceneObject, desc: dict[str, str]) -> bool:
    """Whether ``obj`` has every attribute of ``desc`` (keys among shape, color, size)."""
    for k, v in desc.items():
        if getattr(obj, k) != v:
            return False
    return True


def select(objects: Sequence[SceneObject], desc: dict[str, str]) -> list[int]:
    """Indices of the objects matching ``desc``."""
    return [i for i, o in enumerate(objects) if matches(o, desc)]


def exists_relation(scene: Scene, x: dict[str, str], rel: str, y: dict[str, str]) -> bool | None:
    """Tri-state truth of "some X is <rel> some Y" (X, Y attribute descriptions).

    ``True`` if a pair clearly satisfies it, ``False`` if every pair clearly fails it (or X or Y
    is absent), ``None`` otherwise.
    """
    verdicts = [relation(rel, scene.objects[i], scene.objects[j], scene.size)
                for i in select(scene.objects, x) for j in select(scene.objects, y) if i != j]
    if any(v is True for v in verdicts):
        return True
    if all(v is False for v in verdicts):
        return False
    return None
