"""NLVR2-style statements about a pair of scenes (the left and the right image).

Templates (X, Y are attribute descriptions such as "red circle" or "star"):

- ``the {left|right} image contains exactly {k} {color} objects`` / ``... {k} {shape}s``
- ``both images contain a X``
- ``both images have a X {relation} a Y``
- ``at least one image has a X {relation} a Y``
- ``there are more objects in the left image than in the right image`` (and reversed)
- ``in total there are {k} {color} objects``
- ``the {left|right} image has a X that is bigger than a Y``

Truth is tri-state (see :func:`~.scenes.exists_relation`); a statement is kept only when its truth
is clear and equals the requested label.
"""

from __future__ import annotations

import numpy as np

from .language import NUMBER_WORDS, POSITION_RELS, REL_PHRASES, article, choice, describe
from .scenes import COLORS, SHAPES, Scene, exists_relation, select

__all__ = ["pair_statement"]


def _and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _desc(scenes: tuple[Scene, Scene], rng: np.random.Generator) -> dict[str, str]:
    s = scenes[int(rng.integers(2))]
    o = s.objects[int(rng.integers(len(s.objects)))]
    return {"color": o.color, "shape": o.shape} if rng.random() < 0.6 else {"shape": o.shape}


def _np(d: dict[str, str]) -> str:
    w = describe(d)
    return article(w) + w


def _candidate(pair: tuple[Scene, Scene], rng: np.random.Generator) -> tuple[str, bool | None]:
    kind = int(rng.integers(7))
    side = int(rng.integers(2))
    name = ("left", "right")[side]
    if kind == 0:
        key = choice(rng, ("color", "shape"))
        d = {key: choice(rng, list(COLORS) if key == "color" else SHAPES)}
        true_k = len(select(pair[side].objects, d))
        k = true_k if rng.random() < 0.5 else int(rng.integers(1, 4))
        amount = f"no {describe(d, 0)}" if k == 0 else f"exactly {NUMBER_WORDS[k]} {describe(d, k)}"
        return f"the {name} image contains {amount}", k == true_k
    if kind == 1:
        d = _desc(pair, rng)
        return (f"both images contain {_np(d)}",
                all(bool(select(s.objects, d)) for s in pair))
    if kind in (2, 3):
        x, y = _desc(pair, rng), _desc(pair, rng)
        rel = choice(rng, POSITION_RELS[:4])
        v0, v1 = (exists_relation(s, x, rel, y) for s in pair)
        lead = "both images have" if kind == 2 else "at least one image has"
        return (f"{lead} {_np(x)} {REL_PHRASES[rel]} {_np(y)}",
                _and(v0, v1) if kind == 2 else _or(v0, v1))
    if kind == 4:
        n0, n1 = len(pair[side].objects), len(pair[1 - side].objects)
        other = ("left", "right")[1 - side]
        return f"there are more objects in the {name} image than in the {other} image", n0 > n1
    if kind == 5:
        color = choice(rng, list(COLORS))
        true_k = sum(len(select(s.objects, {"color": color})) for s in pair)
        k = true_k if rng.random() < 0.5 else int(rng.integers(1, 5))
        if k > 6:
            return "", None
        verb = "is" if k == 1 else "are"
        return (f"in total there {verb} {NUMBER_WORDS[k]} {describe({'color': color}, k)}",
                k == true_k)
    x, y = _desc(pair, rng), _desc(pair, rng)
    return (f"the {name} image has {_np(x)} that is bigger than {_np(y)}",
            exists_relation(pair[side], x, "bigger than", y))


def pair_statement(left: Scene, right: Scene, rng: np.random.Generator, label: bool,
                   tries: int = 60) -> str | None:
    """A statement about the pair whose clear truth value is ``label``; ``None`` if none found."""
    for _ in range(tries):
        text, truth = _candidate((left, right), rng)
        if truth is not None and truth == label and text:
            return text
    return None
