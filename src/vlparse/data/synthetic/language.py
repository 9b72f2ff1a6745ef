"""The scene world's grammar: captions, region phrases, referring expressions and SNLI-VE
hypotheses, each generated from a :class:`~.scenes.Scene` and a numpy generator.

Every statement is built from clear facts (see :func:`~.scenes.relation`), so a caption is true
of the drawn picture. Texts are lower-case plain English; the Karpathy ``raw`` form capitalises
the first letter and adds a full stop (character offsets are unchanged by that).

A generated text comes with ``spans``: ``(start, end, object_indices)`` character spans of the
phrases that name drawn objects (used for phrase grounding). Each span contains the shape or
colour word of every object it grounds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .scenes import COLORS, SHAPES, Scene, exists_relation, relation, select

__all__ = [
    "NUMBER_WORDS",
    "REL_PHRASES",
    "Text",
    "compose",
    "plural",
    "describe",
    "article",
    "WITH_SHAPE",
    "NO_SHAPE",
    "NO_COLOR",
    "NO_SIZE",
    "unique_desc",
    "captions",
    "regions",
    "referring_expressions",
    "hypotheses",
    "choice",
]

Span = tuple[int, int, list[int]]
Text = tuple[str, list[Span]]
Part = tuple[str, "list[int] | None"]

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six")
#: How each relation is phrased between two noun phrases.
REL_PHRASES = {"left of": "to the left of", "right of": "to the right of", "above": "above",
               "below": "below", "bigger than": "bigger than", "smaller than": "smaller than",
               "next to": "next to"}
POSITION_RELS = ("left of", "right of", "above", "below", "next to")
_MATERIALS = ("wood", "paper", "metal", "glass", "plastic", "stone")
_DAYS = ("monday", "tuesday", "friday", "sunday")


def choice(rng: np.random.Generator, items: Sequence):
    """One element of ``items`` drawn with ``rng``."""
    return items[int(rng.integers(len(items)))]


def plural(noun: str) -> str:
    """``circle -> circles``, ``cross -> crosses``."""
    return noun + ("es" if noun.endswith("s") else "s")


def compose(parts: Sequence[Part]) -> Text:
    """Join text parts; parts carrying object indices become spans."""
    text, spans, pos = "", [], 0
    for s, objs in parts:
        if objs is not None:
            spans.append((pos, pos + len(s), list(objs)))
        text += s
        pos += len(s)
    return text, spans


def describe(desc: dict[str, str], count: int = 1) -> str:
    """Noun phrase words for an attribute description, e.g. ``small red circle``/``red objects``."""
    words = [desc[k] for k in ("size", "color") if k in desc]
    noun = desc.get("shape", "object")
    words.append(noun if count == 1 else plural(noun))
    return " ".join(words)


def article(words: str) -> str:
    """``"a "`` or ``"an "`` for the words that follow."""
    return "an " if words[0] in "aeiou" else "a "


def _attrs(scene: Scene, i: int, keys: Sequence[str]) -> dict[str, str]:
    o = scene.objects[i]
    return {k: getattr(o, k) for k in keys}


WITH_SHAPE = (("shape",), ("color", "shape"), ("size", "shape"), ("size", "color", "shape"))
NO_SHAPE = (("color",), ("size",), ("size", "color"))
NO_COLOR = (("shape",), ("size", "shape"))
NO_SIZE = (("shape",), ("color",), ("color", "shape"))


def unique_desc(scene: Scene, i: int, rng: np.random.Generator,
                options: Sequence[Sequence[str]] = WITH_SHAPE) -> dict[str, str] | None:
    """A random attribute description (keys from one of ``options``) that picks object ``i`` and
    no other object of ``scene``; ``None`` if no option is unique."""
    good = [d for d in (_attrs(scene, i, keys) for keys in options)
            if select(scene.objects, d) == [i]]
    return choice(rng, good) if good else None


def _indef(scene: Scene, i: int, rng: np.random.Generator) -> list[Part]:
    words = describe(_attrs(scene, i, choice(rng, WITH_SHAPE[1:])))
    return [(article(words), None), (words, [i])]


def _ref(scene: Scene, i: int, rng: np.random.Generator) -> list[Part]:
    """``the <unique description>`` when one exists, else an indefinite phrase."""
    d = unique_desc(scene, i, rng)
    if d is None:
        return _indef(scene, i, rng)
    return [("the ", None), (describe(d), [i])]


def _true_pairs(scene: Scene, rels: Sequence[str]) -> list[tuple[int, str, int]]:
    n = len(scene.objects)
    return [(i, r, j) for i in range(n) for j in range(n) for r in rels
            if i != j and relation(r, scene.objects[i], scene.objects[j], scene.size) is True]


def _cap_scene(scene: Scene, rng: np.random.Generator) -> Text | None:
    n, bg = NUMBER_WORDS[len(scene.objects)], scene.background
    form = choice(rng, ("{n} shapes on a {bg} background", "a picture of {n} shapes on a {bg} "
                        "background", "there are {n} objects on a {bg} background"))
    return compose([(form.format(n=n, bg=bg), None)])


def _cap_relation(scene: Scene, rng: np.random.Generator, rels=POSITION_RELS) -> Text | None:
    pairs = _true_pairs(scene, rels)
    if not pairs:
        return None
    i, rel, j = choice(rng, pairs)
    verb = choice(rng, (" ", " is "))
    return compose([*_indef(scene, i, rng), (verb + REL_PHRASES[rel] + " ", None),
                    *_indef(scene, j, rng)])


def _cap_size(scene: Scene, rng: np.random.Generator) -> Text | None:
    pairs = _true_pairs(scene, ("bigger than", "smaller than"))
    if not pairs:
        return None
    i, rel, j = choice(rng, pairs)
    return compose([*_ref(scene, i, rng), (" is " + rel + " ", None), *_ref(scene, j, rng)])


def _cap_count(scene: Scene, rng: np.random.Generator) -> Text | None:
    key = choice(rng, ("color", "shape"))
    o = scene.objects[int(rng.integers(len(scene.objects)))]
    d = {key: getattr(o, key)}
    idx = select(scene.objects, d)
    k = len(idx)
    lead = "there is one " if k == 1 else f"there are {NUMBER_WORDS[k]} "
    return compose([(lead, None), (describe(d, k), idx)])


def _cap_list(scene: Scene, rng: np.random.Generator) -> Text | None:
    n = len(scene.objects)
    m = min(n, int(rng.integers(2, 4)))
    idx = sorted(int(v) for v in rng.choice(n, size=m, replace=False))
    parts: list[Part] = []
    for k, i in enumerate(idx):
        if k:
            parts.append((" and " if k == m - 1 else ", ", None))
        words = describe(_attrs(scene, i, ("size", "color", "shape")))
        parts += [(article(words), None), (words, [i])]
    return compose(parts)


_CAPTION_TEMPLATES: tuple[Callable[[Scene, np.random.Generator], Text | None], ...] = (
    _cap_scene, _cap_relation, _cap_size, _cap_count, _cap_list)


def captions(scene: Scene, rng: np.random.Generator, k: int = 5) -> list[Text]:
    """``k`` different true captions of ``scene`` (scene summary, relation, size comparison,
    count, attribute list), with grounding spans."""
    out: list[Text] = []
    seen: set[str] = set()
    order = list(_CAPTION_TEMPLATES)
    for attempt in range(12 * k):
        fn = order[attempt % len(order)] if attempt < len(order) else choice(rng, order)
        cap = fn(scene, rng)
        if cap is not None and cap[0] not in seen:
            seen.add(cap[0])
            out.append(cap)
            if len(out) == k:
                return out
    n, bg = NUMBER_WORDS[len(scene.objects)], scene.background
    for form in ("an image of {n} shapes", "{n} simple shapes", "a {bg} background with shapes",
                 "some shapes on a {bg} background", "a drawing of {n} objects"):
        text = form.format(n=n, bg=bg)
        if text not in seen and len(out) < k:
            seen.add(text)
            out.append((text, []))
    return out


def regions(scene: Scene, rng: np.random.Generator, max_relations: int = 3
            ) -> list[tuple[str, tuple[float, float, float, float]]]:
    """Visual Genome style ``(phrase, box [x, y, w, h])``: one per object, plus up to
    ``max_relations`` relation phrases boxed by the union of the two objects."""
    out = []
    for o in scene.objects:
        words = describe({"size": o.size, "color": o.color, "shape": o.shape})
        out.append((choice(rng, (article(words) + words, words)), o.bbox))
    pairs = _true_pairs(scene, POSITION_RELS)
    if pairs:
        picks = rng.choice(len(pairs), size=min(max_relations, len(pairs)), replace=False)
        for p in sorted(int(v) for v in picks):
            i, rel, j = pairs[p]
            a, b = scene.objects[i], scene.objects[j]
            phrase = (f"{describe({'color': a.color, 'shape': a.shape})} {rel} "
                      f"{describe({'color': b.color, 'shape': b.shape})}")
            ax, ay, aw, ah = a.bbox
            bx, by, bw, bh = b.bbox
            x0, y0 = min(ax, bx), min(ay, by)
            box = (x0, y0, max(ax + aw, bx + bw) - x0, max(ay + ah, by + bh) - y0)
            out.append((phrase, box))
    return out


def referring_expressions(scene: Scene, rng: np.random.Generator) -> list[tuple[int, Text]]:
    """RefCOCO style ``(object index, expression)``: each object that can be singled out, by its
    attributes or by its shape and a relation to a uniquely described object."""
    out = []
    objs = scene.objects
    anchors = [unique_desc(scene, j, rng) for j in range(len(objs))]
    for i in range(len(objs)):
        d = anchors[i]
        if d is not None and rng.random() < 0.6:
            out.append((i, compose([("the ", None), (describe(d), [i])])))
            continue
        found = None
        for rel in rng.permutation(POSITION_RELS):
            for j in range(len(objs)):
                dj = anchors[j] if j != i else None
                if dj is None:
                    continue
                x = {"shape": objs[i].shape}
                cands = [c for c in select(objs, x) if c != j]
                verdicts = {c: relation(str(rel), objs[c], objs[j], scene.size) for c in cands}
                if verdicts[i] is True and all(v is False for c, v in verdicts.items() if c != i):
                    found = compose([("the ", None), (describe(x), [i]),
                                     (" " + REL_PHRASES[str(rel)] + " the ", None),
                                     (describe(dj), [j])])
                    break
            if found:
                break
        if found is None and d is not None:
            found = compose([("the ", None), (describe(d), [i])])
        if found is not None:
            out.append((i, found))
    return out


def _present_desc(scene: Scene, rng: np.random.Generator) -> dict[str, str]:
    o = scene.objects[int(rng.integers(len(scene.objects)))]
    return {"color": o.color, "shape": o.shape} if rng.random() < 0.5 else {"shape": o.shape}


def _contradiction(scene: Scene, rng: np.random.Generator) -> str | None:
    kind = choice(rng, ("count", "absent", "relation", "size"))
    if kind == "count":
        color = choice(rng, list(COLORS))
        k = len(select(scene.objects, {"color": color}))
        if k > 0 and rng.random() < 0.4:
            return f"there are no {color} objects"
        wrong = [v for v in range(1, 5) if v != k]
        v = choice(rng, wrong)
        return f"there {'is' if v == 1 else 'are'} {NUMBER_WORDS[v]} " + describe(
            {"color": color}, v)
    if kind == "absent":
        d = {"color": choice(rng, list(COLORS)), "shape": choice(rng, SHAPES)}
        if select(scene.objects, d):
            return None
        return "there is " + article(describe(d)) + describe(d)
    x, y = _present_desc(scene, rng), _present_desc(scene, rng)
    rel = choice(rng, POSITION_RELS[:4] if kind == "relation" else ("bigger than", "smaller than"))
    xs, ys = select(scene.objects, x), select(scene.objects, y)
    if not any(i != j for i in xs for j in ys) or exists_relation(scene, x, rel, y) is not False:
        return None
    wx, wy = describe(x), describe(y)
    return f"{article(wx)}{wx} is {REL_PHRASES[rel]} {article(wy)}{wy}"


def _neutral(scene: Scene, rng: np.random.Generator) -> str:
    o = scene.objects[int(rng.integers(len(scene.objects)))]
    w = describe({"color": o.color, "shape": o.shape})
    form = choice(rng, ("the {w} is made of {m}", "the {w} is very heavy", "the {w} feels warm",
                        "the picture was made on a {d}", "the {s} was drawn by a child",
                        "the {w} was cut out of {m}"))
    return form.format(w=w, m=choice(rng, _MATERIALS), d=choice(rng, _DAYS), s=plural(o.shape))


def hypotheses(scene: Scene, rng: np.random.Generator, premise: str = "") -> list[tuple[str, str]]:
    """SNLI-VE ``(hypothesis, gold_label)``: one entailment (a true caption other than
    ``premise``), one contradiction (a clearly false statement), one neutral (about things the
    picture cannot show: material, weight, date, who drew it)."""
    out: list[tuple[str, str]] = []
    for _ in range(20):
        cap = choice(rng, _CAPTION_TEMPLATES[1:])(scene, rng)
        if cap is not None and cap[0] != premise:
            out.append((cap[0], "entailment"))
            break
    for _ in range(40):
        text = _contradiction(scene, rng)
        if text is not None:
            out.append((text, "contradiction"))
            break
    out.append((_neutral(scene, rng), "neutral"))
    return out
