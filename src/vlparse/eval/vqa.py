"""The VQA v2 metric, answer vocabulary, soft targets and the test-server result file.

**Normalisation** (:func:`~vlparse.processing.answers.normalize_answer`) follows the rules of the
official evaluation; it and the soft targets live in :mod:`vlparse.processing.answers`, below the
data that trains against them. The soft targets are a training choice (``task.soft_targets``:
the paper's ``paper_0_3``, 0 / 0.3 / 0.6 / 0.9 / 1 for 0 / 1 / 2 / 3 / 4+ humans, after its
reference [24]; ``min_n_over_3``; ``leave_one_out``); the metric below does not depend on it.

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
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from vlparse.processing.answers import (
    PUNCTUATION,
    leave_one_out_score,
    normalize_answer,
    soft_scores,
)

__all__ = [
    "PUNCTUATION",
    "build_answer_vocab",
    "normalize_answer",
    "soft_scores",
    "vqa_accuracy",
    "vqa_score",
    "write_vqa_results",
]


def vqa_score(prediction: str, answers: Sequence[str]) -> float:
    """The official accuracy of one predicted answer against the human answers, in ``[0, 1]``.

    Args:
        prediction: the predicted answer (raw; it is normalised here).
        answers: the humans' raw answers (10 in VQA v2).
    """
    pred = normalize_answer(prediction)
    matches = sum(normalize_answer(a) == pred for a in answers)
    return leave_one_out_score(matches, len(answers))


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
