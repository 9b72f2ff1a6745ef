"""VQA answers as the official evaluation reads them, and the soft targets trained against them.

**Normalisation** (:func:`normalize_answer`), the rules of the official evaluation, step by step:
newlines and tabs become spaces and the ends are stripped; each punctuation mark of
:data:`PUNCTUATION` is deleted when it touches a space or when the text holds a digit-comma-digit
group (``1,000``), otherwise it becomes a space; a full stop not followed by a digit is deleted
(``2.5`` keeps its point); then, word by word in lower case, number words become digits
(``none``/``zero`` to ``ten``), the articles ``a``, ``an``, ``the`` are dropped, and contractions
written without their apostrophe get it back (``dont`` -> ``don't``).

Both the data (the targets of :class:`~vlparse.data.finetune.VQADataset`) and the metric
(:mod:`vlparse.eval.vqa`) build on this module, so it sits below both.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import lru_cache
from itertools import product

import torch
from torch import Tensor

__all__ = ["PUNCTUATION", "SOFT_TARGETS", "leave_one_out_score", "normalize_answer",
           "soft_score", "soft_scores"]

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
               "@", "`", ",", "?", "!")
"""Marks that the normalisation deletes or turns into spaces (the apostrophe is kept)."""

_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                 "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_LONE_PERIOD = re.compile(r"\.(?!\d)")

# Contractions in their written form; every way of leaving out some of their apostrophes is
# mapped back to them, except spellings that are ordinary words (see _NOT_CONTRACTIONS).
_CONTRACTIONS = (
    "ain't aren't can't couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't "
    "haven't he'd he'd've he'll he's how'd how'll how's i'd i'd've i'll i'm i've isn't it'd "
    "it'd've it'll let's ma'am mightn't mightn't've might've mustn't must've needn't not've "
    "o'clock oughtn't shan't she'd she'd've she'll she's should've shouldn't shouldn't've "
    "somebody'd somebody'd've somebody'll somebody's someone'd someone'd've someone'll "
    "someone's something'd something'd've something'll that's there'd there'd've there're "
    "there's they'd they'd've they'll they're they've wasn't we'd we'd've we'll we're we've "
    "weren't what'll what're what's what've when's where'd where's where've who'd who'd've "
    "who'll who's who've why'll why're why's won't would've wouldn't wouldn't've y'all you'd "
    "you'd've you'll you're you've"
).split()
_NOT_CONTRACTIONS = frozenset({"hell", "shell", "shed", "well", "were", "wed", "ill", "id",
                               "its", "lets"})


@lru_cache(maxsize=1)
def _contraction_map() -> dict[str, str]:
    """``{spelling without some apostrophes: contraction}`` (built once, read-only use)."""
    out: dict[str, str] = {}
    for word in _CONTRACTIONS:
        pieces = word.split("'")
        for keep in product(("'", ""), repeat=len(pieces) - 1):
            variant = pieces[0] + "".join(k + p for k, p in zip(keep, pieces[1:], strict=True))
            if variant != word and variant not in _NOT_CONTRACTIONS:
                out[variant] = word
    return out


def _punctuation(text: str) -> str:
    out = text
    strip_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in PUNCTUATION:
        if strip_all or (mark + " ") in text or (" " + mark) in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _LONE_PERIOD.sub("", out)


def normalize_answer(answer: str) -> str:
    """The official VQA answer normalisation (see the module docstring), e.g. ``"Two."`` ->
    ``"2"``, ``"a dog"`` -> ``"dog"``, ``"dont know"`` -> ``"don't know"``."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    contractions = _contraction_map()
    words = []
    for word in _punctuation(text).lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word in _ARTICLES:
            continue
        words.append(contractions.get(word, word))
    return " ".join(words)


def leave_one_out_score(matches: int, total: int) -> float:
    """Mean over the ``total`` leave-one-out subsets of ``min(1, matches in subset / 3)``."""
    if total <= 0:
        raise ValueError("VQA accuracy needs at least one human answer")
    with_match = matches * min(1.0, (matches - 1) / 3.0)  # the left-out human gave the answer
    without = (total - matches) * min(1.0, matches / 3.0)
    return (with_match + without) / total


SOFT_TARGETS = ("paper_0_3", "min_n_over_3", "leave_one_out")
"""The soft-target schemes of :func:`soft_score` (``task.soft_targets`` of the VQA recipe)."""


def soft_score(matches: int, total: int, variant: str) -> float:
    """The soft target of an answer that ``matches`` of ``total`` humans gave.

    ``variant``:

    - ``"paper_0_3"``: the scheme of the paper's reference [24] (Bilinear Attention Networks,
      which takes it from the bottom-up attention VQA code), 0, 0.3, 0.6, 0.9 and 1 for 0, 1,
      2, 3 and 4 or more humans: ``min(1, 0.3 * matches)``;
    - ``"min_n_over_3"``: ``min(1, matches / 3)``, so 3 humans give 1.0;
    - ``"leave_one_out"``: the accuracy the metric would give that answer
      (:func:`leave_one_out_score`), so 3 of 10 give 0.9.

    Only the training target changes; the metric is always the official accuracy.
    """
    if variant == "paper_0_3":
        return min(1.0, 0.3 * matches)
    if variant == "min_n_over_3":
        return min(1.0, matches / 3.0)
    if variant == "leave_one_out":
        return leave_one_out_score(matches, total)
    raise ValueError(f"soft targets: variant must be one of {', '.join(SOFT_TARGETS)}, "
                     f"got {variant!r}")


def soft_scores(
    answers: Sequence[str],
    vocab: Sequence[str] | Mapping[str, int],
    variant: str = "min_n_over_3",
) -> Tensor:
    """Soft target of every vocabulary answer for one question.

    Args:
        answers: the humans' raw answers (normalised here).
        vocab: normalised answers (a list from :func:`build_answer_vocab`, or a prebuilt
            ``{answer: index}`` map, faster when called per item).
        variant: one of :data:`SOFT_TARGETS` (see :func:`soft_score`).

    Returns:
        ``(V,)`` float; zero for answers outside the vocabulary and for an empty ``answers``.
    """
    index = vocab if isinstance(vocab, Mapping) else {a: i for i, a in enumerate(vocab)}
    if variant not in SOFT_TARGETS:
        raise ValueError(f"soft_scores: variant must be one of {', '.join(SOFT_TARGETS)}, "
                         f"got {variant!r}")
    target = torch.zeros(len(index), dtype=torch.float32)
    counts = Counter(normalize_answer(a) for a in answers)
    for answer, n in counts.items():
        i = index.get(answer)
        if i is not None:
            target[i] = soft_score(n, len(answers), variant)
    return target
