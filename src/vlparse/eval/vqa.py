"""The VQA v2 metric, answer vocabulary, soft targets and the test-server result file.

**Normalisation** (:func:`normalize_answer`), the rules of the official evaluation, step by step:
newlines and tabs become spaces and the ends are stripped; each punctuation mark of
:data:`PUNCTUATION` is deleted when it touches a space or when the text holds a digit-comma-digit
group (``1,000``), otherwise it becomes a space; a full stop not followed by a digit is deleted
(``2.5`` keeps its point); then, word by word in lower case, number words become digits
(``none``/``zero`` to ``ten``), the articles ``a``, ``an``, ``the`` are dropped, and contractions
written without their apostrophe get it back (``dont`` -> ``don't``).

**Accuracy** of a predicted answer against ``n`` human answers (10 in VQA v2): the mean, over the
``n`` subsets that leave one human out, of ``min(1, #humans of the subset who gave it / 3)``. So 3
agreeing humans of 10 give ``(3 * 2/3 + 7 * 1) / 10 = 0.9``, and 4 or more give 1. Unlike the
official script, which normalises the human answers only when they are not all identical, every
answer is normalised here (the two agree whenever the humans' answers are already normal).
Scores are fractions in ``[0, 1]`` (the official script prints percentages).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from itertools import product
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "PUNCTUATION",
    "build_answer_vocab",
    "normalize_answer",
    "soft_scores",
    "vqa_accuracy",
    "vqa_score",
    "write_vqa_results",
]

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


def _leave_one_out(matches: int, total: int) -> float:
    """Mean over the ``total`` leave-one-out subsets of ``min(1, matches in subset / 3)``."""
    if total <= 0:
        raise ValueError("VQA accuracy needs at least one human answer")
    with_match = matches * min(1.0, (matches - 1) / 3.0)  # the left-out human gave the answer
    without = (total - matches) * min(1.0, matches / 3.0)
    return (with_match + without) / total


def vqa_score(prediction: str, answers: Sequence[str]) -> float:
    """The official accuracy of one predicted answer against the human answers, in ``[0, 1]``.

    Args:
        prediction: the predicted answer (raw; it is normalised here).
        answers: the humans' raw answers (10 in VQA v2).
    """
    pred = normalize_answer(prediction)
    matches = sum(normalize_answer(a) == pred for a in answers)
    return _leave_one_out(matches, len(answers))


def _fields(record: Any) -> tuple[int, list[str], str | None, str | None]:
    """``(question_id, answers, answer_type, multiple_choice_answer)`` of a record or dict."""
    if isinstance(record, Mapping):
        answers = [a["answer"] if isinstance(a, Mapping) else a for a in record["answers"]]
        return (record["question_id"], answers, record.get("answer_type"),
                record.get("multiple_choice_answer"))
    return (record.question_id, list(record.answers), record.answer_type,
            record.multiple_choice_answer)


def vqa_accuracy(predictions: Mapping[int, str], ground_truth: Iterable[Any]) -> dict[str, Any]:
    """Official VQA accuracy, overall and per answer type.

    Args:
        predictions: ``{question_id: predicted answer}``; extra ids are ignored.
        ground_truth: :class:`~vlparse.data.formats.vqa.VQAQuestion` records (or official
            annotation dicts) of the questions to score; records without answers are skipped.

    Returns:
        ``{"overall": float, "per_answer_type": {type: float}, "num_questions": int}``, each
        accuracy the mean of :func:`vqa_score` over the questions (fractions in ``[0, 1]``).

    Raises:
        ValueError: no question has answers, or some have no prediction (the first few ids are
            listed).
    """
    scores: list[float] = []
    by_type: dict[str, list[float]] = {}
    missing = []
    for rec in ground_truth:
        qid, answers, answer_type, _ = _fields(rec)
        if not answers:
            continue
        if qid not in predictions:
            missing.append(qid)
            continue
        s = vqa_score(predictions[qid], answers)
        scores.append(s)
        by_type.setdefault(answer_type or "unknown", []).append(s)
    if missing:
        raise ValueError(
            f"vqa_accuracy: {len(missing)} question(s) have no prediction, e.g. question_id "
            f"{missing[:5]}; predict every question, or pass only the ones you predicted"
        )
    if not scores:
        raise ValueError("vqa_accuracy: no question with ground-truth answers (a test split?)")
    return {
        "overall": sum(scores) / len(scores),
        "per_answer_type": {t: sum(v) / len(v) for t, v in sorted(by_type.items())},
        "num_questions": len(scores),
    }


def build_answer_vocab(
    annotations: Iterable[Any], size: int = 3129, source: str = "multiple_choice_answer"
) -> list[str]:
    """The ``size`` most frequent normalised answers, most frequent first, ties alphabetical.

    Args:
        annotations: VQA records or official annotation dicts (usually train + val).
        size: vocabulary size (3,129 is the field's convention); fewer if fewer answers exist.
        source: ``"multiple_choice_answer"`` counts each question's consensus answer once (the
            usual recipe behind 3,129); ``"answers"`` counts every human answer.

    Returns:
        Normalised answer strings; the order is a pure function of the counts, so the same data
        give the same vocabulary.
    """
    if source not in ("multiple_choice_answer", "answers"):
        raise ValueError(
            f"build_answer_vocab: source must be 'multiple_choice_answer' or 'answers', "
            f"got {source!r}"
        )
    if size < 1:
        raise ValueError(f"build_answer_vocab: size must be >= 1, got {size}")
    counts: Counter[str] = Counter()
    for rec in annotations:
        _, answers, _, consensus = _fields(rec)
        if source == "answers":
            counts.update(normalize_answer(a) for a in answers)
        elif consensus is not None:
            counts[normalize_answer(consensus)] += 1
    counts.pop("", None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [answer for answer, _ in ranked[:size]]


def soft_scores(
    answers: Sequence[str],
    vocab: Sequence[str] | Mapping[str, int],
    variant: str = "count",
) -> Tensor:
    """Soft target of every vocabulary answer for one question.

    Args:
        answers: the humans' raw answers (normalised here).
        vocab: normalised answers (a list from :func:`build_answer_vocab`, or a prebuilt
            ``{answer: index}`` map, faster when called per item).
        variant: ``"count"`` (the common form): ``min(1, count / 3)``, so 3 of 10 humans give
            1.0; ``"leave_one_out"``: the accuracy the metric would give that answer
            (:func:`vqa_score`), so 3 of 10 give 0.9.

    Returns:
        ``(V,)`` float; zero for answers outside the vocabulary and for an empty ``answers``.
    """
    index = vocab if isinstance(vocab, Mapping) else {a: i for i, a in enumerate(vocab)}
    if variant not in ("count", "leave_one_out"):
        raise ValueError(
            f"soft_scores: variant must be 'count' or 'leave_one_out', got {variant!r}"
        )
    target = torch.zeros(len(index), dtype=torch.float32)
    counts = Counter(normalize_answer(a) for a in answers)
    for answer, n in counts.items():
        i = index.get(answer)
        if i is None:
            continue
        if variant == "count":
            target[i] = min(1.0, n / 3.0)
        else:
            target[i] = _leave_one_out(n, len(answers))
    return target


def write_vqa_results(
    path: str | os.PathLike, predictions: Mapping[int, str] | Iterable[tuple[int, str]]
) -> Path:
    """Write the test-server result file ``[{"question_id": int, "answer": str}, ...]``.

    Args:
        predictions: ``{question_id: answer}`` or ``(question_id, answer)`` pairs; written in
            ascending question id.

    Raises:
        ValueError: a question id that is not an integer, an answer that is not a string, or a
            question id given twice.
    """
    pairs = list(predictions.items()) if isinstance(predictions, Mapping) else list(predictions)
    seen: set[int] = set()
    rows = []
    for qid, answer in pairs:
        if isinstance(qid, bool) or not isinstance(qid, int):
            if isinstance(qid, Tensor) and qid.numel() == 1:
                qid = int(qid)
            else:
                raise ValueError(f"write_vqa_results: question_id {qid!r} is not an integer")
        if not isinstance(answer, str):
            raise ValueError(f"write_vqa_results: answer of question {qid} is not a string")
        if qid in seen:
            raise ValueError(f"write_vqa_results: question_id {qid} is given twice")
        seen.add(qid)
        rows.append({"question_id": int(qid), "answer": answer})
    rows.sort(key=lambda r: r["question_id"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path
