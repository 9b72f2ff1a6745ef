"""VQA questions about a scene, with ten simulated annotator answers each.

Question families (``family -> answer type``): ``exist`` yes/no, ``count`` number, ``color`` other,
``shape`` other, ``size`` other, ``relation`` yes/no, ``side`` other, ``compare`` yes/no. Yes/no
families draw the target answer first (50/50), so yes and no are balanced.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .language import (
    NO_COLOR,
    NO_SHAPE,
    NO_SIZE,
    REL_PHRASES,
    article,
    choice,
    describe,
    unique_desc,
)
from .scenes import COLORS, SHAPES, SIZES, Scene, relation, select

__all__ = ["ANSWERS", "QUESTION_FAMILIES", "Question", "questions", "annotator_answers"]

#: Every answer the scene world's questions can have.
ANSWERS: tuple[str, ...] = ("yes", "no", *[str(k) for k in range(7)], *COLORS, *SHAPES, *SIZES,
                            "left", "right", "above", "below")
#: family -> (VQA question_type, answer_type)
QUESTION_FAMILIES: dict[str, tuple[str, str]] = {
    "exist": ("is there a", "yes/no"),
    "count": ("how many", "number"),
    "color": ("what color is the", "other"),
    "shape": ("what shape is the", "other"),
    "size": ("what size is the", "other"),
    "relation": ("is the", "yes/no"),
    "side": ("is the", "other"),
    "compare": ("are there more", "yes/no"),
}
#: (question text, answer, family)
Question = tuple[str, str, str]
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")


def _yes(rng: np.random.Generator) -> bool:
    return bool(rng.random() < 0.5)


def _q_exist(scene: Scene, rng: np.random.Generator) -> Question | None:
    if _yes(rng):
        o = scene.objects[int(rng.integers(len(scene.objects)))]
        d = {"color": o.color, "shape": o.shape}
    else:
        d = {"color": choice(rng, list(COLORS)), "shape": choice(rng, SHAPES)}
    words = describe(d)
    ans = "yes" if select(scene.objects, d) else "no"
    return f"is there {article(words)}{words}?", ans, "exist"


def _q_count(scene: Scene, rng: np.random.Generator) -> Question | None:
    key = choice(rng, ("color", "shape", "size", "all"))
    if key == "all":
        d = {}
    elif rng.random() < 0.6:  # mostly about drawn attributes, so that counts are rarely zero
        d = {key: getattr(scene.objects[int(rng.integers(len(scene.objects)))], key)}
    else:
        d = {key: choice(rng, {"color": list(COLORS), "shape": SHAPES, "size": list(SIZES)}[key])}
    return f"how many {describe(d, 2)} are there?", str(len(select(scene.objects, d))), "count"


def _q_attribute(family: str, options) -> Callable[[Scene, np.random.Generator], Question | None]:
    def make(scene: Scene, rng: np.random.Generator) -> Question | None:
        i = int(rng.integers(len(scene.objects)))
        d = unique_desc(scene, i, rng, options)
        if d is None:
            return None
        return (f"what {family} is the {describe(d)}?", getattr(scene.objects[i], family),
                family)
    return make


def _unique_pair(scene: Scene, rng: np.random.Generator):
    n = len(scene.objects)
    i, j = (int(v) for v in rng.choice(n, size=2, replace=False))
    di, dj = unique_desc(scene, i, rng), unique_desc(scene, j, rng)
    if di is None or dj is None:
        return None
    return i, j, describe(di), describe(dj)


def _q_relation(scene: Scene, rng: np.random.Generator) -> Question | None:
    pair = _unique_pair(scene, rng)
    if pair is None:
        return None
    i, j, a, b = pair
    rel = choice(rng, ("left of", "right of", "above", "below", "bigger than", "smaller than",
                       "next to"))
    truth = relation(rel, scene.objects[i], scene.objects[j], scene.size)
    if truth is None:
        return None
    return f"is the {a} {REL_PHRASES[rel]} the {b}?", "yes" if truth else "no", "relation"


def _q_side(scene: Scene, rng: np.random.Generator) -> Question | None:
    pair = _unique_pair(scene, rng)
    if pair is None:
        return None
    i, j, a, b = pair
    first, second = ("left", "right") if _yes(rng) else ("above", "below")
    truth = relation(first + (" of" if first == "left" else ""), scene.objects[i],
                     scene.objects[j], scene.size)
    if truth is None:
        return None
    if first == "left":
        text = f"is the {a} to the left or to the right of the {b}?"
    else:
        text = f"is the {a} above or below the {b}?"
    return text, first if truth else second, "side"


def _q_compare(scene: Scene, rng: np.random.Generator) -> Question | None:
    key = choice(rng, ("color", "shape"))
    values = list(COLORS) if key == "color" else list(SHAPES)
    i1, i2 = (int(v) for v in rng.choice(len(values), size=2, replace=False))
    d1, d2 = {key: values[i1]}, {key: values[i2]}
    n1, n2 = len(select(scene.objects, d1)), len(select(scene.objects, d2))
    if n1 == n2 == 0:
        return None
    return (f"are there more {describe(d1, 2)} than {describe(d2, 2)}?",
            "yes" if n1 > n2 else "no", "compare")


_FAMILIES: dict[str, Callable[[Scene, np.random.Generator], Question | None]] = {
    "exist": _q_exist,
    "count": _q_count,
    "color": _q_attribute("color", NO_COLOR),
    "shape": _q_attribute("shape", NO_SHAPE),
    "size": _q_attribute("size", NO_SIZE),
    "relation": _q_relation,
    "side": _q_side,
    "compare": _q_compare,
}


def questions(scene: Scene, rng: np.random.Generator, k: int = 6) -> list[Question]:
    """Up to ``k`` different questions of different families (relations weighted double)."""
    names = ["relation", "side", *QUESTION_FAMILIES]
    out: list[Question] = []
    seen: set[str] = set()
    for _ in range(8 * k):
        q = _FAMILIES[choice(rng, names)](scene, rng)
        if q is not None and q[0] not in seen:
            seen.add(q[0])
            out.append(q)
            if len(out) == k:
                break
    return out


def _variant(answer: str, rng: np.random.Generator) -> str:
    """A spelling the VQA normalisation maps back to ``answer`` (number word, article, case)."""
    if answer.isdigit():
        return _NUMBER_WORDS[int(answer)]
    if answer in ("yes", "no"):
        return answer.capitalize()
    return choice(rng, ("the ", "a ")) + answer if answer in SHAPES else answer.capitalize()


def _wrong(answer: str, family: str, rng: np.random.Generator) -> str:
    if answer in ("yes", "no"):
        return "no" if answer == "yes" else "yes"
    if answer.isdigit():
        return str(max(0, int(answer) + choice(rng, (-1, 1))))
    pool = {"color": list(COLORS), "shape": list(SHAPES), "size": list(SIZES),
            "side": ["left", "right", "above", "below"]}[family]
    return choice(rng, [a for a in pool if a != answer])


def annotator_answers(answer: str, family: str, rng: np.random.Generator) -> list[dict]:
    """Ten VQA answers: mostly ``answer``, ~15% spelled differently, ~8% wrong."""
    out = []
    for k in range(10):
        u = rng.random()
        if u < 0.08:
            text, conf = _wrong(answer, family, rng), choice(rng, ("maybe", "no", "yes"))
        elif u < 0.23:
            text, conf = _variant(answer, rng), "yes"
        else:
            text, conf = answer, "maybe" if rng.random() < 0.1 else "yes"
        out.append({"answer": text, "answer_confidence": conf, "answer_id": k + 1})
    return out
