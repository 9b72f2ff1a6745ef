"""The VQA metric: normalisation, leave-one-out accuracy, vocabulary, soft scores, result file."""

from __future__ import annotations

import json
import random

import pytest
import torch

from vlparse.data.formats import VQAQuestion
from vlparse.eval.vqa import (
    build_answer_vocab,
    normalize_answer,
    soft_scores,
    vqa_accuracy,
    vqa_score,
    write_vqa_results,
)


@pytest.mark.parametrize(
    "raw, normal",
    [
        ("Two.", "2"),
        ("two", "2"),
        ("a dog", "dog"),
        ("The Dog!", "dog"),
        ("an apple", "apple"),
        ("none", "0"),
        ("Ten", "10"),
        ("dont know", "don't know"),
        ("isnt", "isn't"),
        ("well", "well"),  # an ordinary word, not "we'll"
        ("1,000", "1000"),  # digit-comma-digit: punctuation deleted, not spaced
        ("yes, sir", "yes sir"),
        ("red-white", "red white"),
        ("2.5", "2.5"),  # a point before a digit stays
        ("  Yes\n", "yes"),
        ("(yes)", "yes"),
        ("the circle", "circle"),
    ],
)
def test_normalize_answer(raw, normal):
    assert normalize_answer(raw) == normal


def _brute_force(pred: str, answers: list[str]) -> float:
    """Literal leave-one-out: for each human, count matches among the others."""
    p = normalize_answer(pred)
    accs = []
    for i in range(len(answers)):
        others = [normalize_answer(a) for k, a in enumerate(answers) if k != i]
        accs.append(min(1.0, sum(o == p for o in others) / 3))
    return sum(accs) / len(accs)


@pytest.mark.parametrize(
    "matches, expected",
    # k matches of 10: (k * min(1, (k-1)/3) + (10-k) * min(1, k/3)) / 10, worked out by hand
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_vqa_score_hand_computed(matches, expected):
    answers = ["dog"] * matches + ["cat"] * (10 - matches)
    assert vqa_score("dog", answers) == pytest.approx(expected)


def test_vqa_score_normalises_both_sides():
    answers = ["two"] * 2 + ["2."] + ["3"] * 7  # three humans said 2, in two spellings
    assert vqa_score("2", answers) == pytest.approx(0.9)
    assert vqa_score("Two.", answers) == pytest.approx(0.9)
    assert vqa_score("a dog", ["dog"] * 10) == 1.0
    assert vqa_score("3", answers) == 1.0


def test_vqa_score_matches_brute_force():
    rng = random.Random(0)
    pool = ["yes", "Yes", "no", "2", "two", "the dog", "dog", "cat"]
    for _ in range(200):
        answers = [rng.choice(pool) for _ in range(rng.choice([3, 9, 10]))]
        pred = rng.choice(pool)
        assert vqa_score(pred, answers) == pytest.approx(_brute_force(pred, answers))


def _q(qid: int, answers: list[str], atype: str | None, mc: str | None = None) -> VQAQuestion:
    return VQAQuestion(qid, 1, "q?", "/x.jpg", answers, mc or (answers[0] if answers else None),
                       atype)


def test_vqa_accuracy_overall_and_per_type():
    gt = [
        _q(1, ["yes"] * 10, "yes/no"),
        _q(2, ["yes"] * 3 + ["no"] * 7, "yes/no"),
        _q(3, ["2"] * 2 + ["3"] * 8, "number"),
        _q(4, [], None),  # a test question: not scored
    ]
    preds = {1: "Yes", 2: "yes", 3: "two", 99: "ignored"}
    out = vqa_accuracy(preds, gt)
    assert out["num_questions"] == 3
    assert out["per_answer_type"] == pytest.approx({"yes/no": (1.0 + 0.9) / 2, "number": 0.6})
    assert out["overall"] == pytest.approx((1.0 + 0.9 + 0.6) / 3)
    # the official annotation dicts work as well
    as_dicts = [{"question_id": 2, "answer_type": "yes/no",
                 "answers": [{"answer": a} for a in ["yes"] * 3 + ["no"] * 7]}]
    assert vqa_accuracy({2: "no"}, as_dicts)["overall"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"1 question\(s\) have no prediction.*\[3\]"):
        vqa_accuracy({1: "yes", 2: "no"}, gt)
    with pytest.raises(ValueError, match="no question with ground-truth"):
        vqa_accuracy({}, [gt[3]])


def test_build_answer_vocab_counts_and_ties():
    anns = [_q(i, ["x"], "other", mc) for i, mc in enumerate(
        ["Two", "2", "dog", "a dog", "cat", "zebra", "yes", "apple", "apple."])]
    # normalised counts: 2 -> 2, dog -> 2, apple -> 2, cat/zebra/yes -> 1
    assert build_answer_vocab(anns, size=10) == ["2", "apple", "dog", "cat", "yes", "zebra"]
    assert build_answer_vocab(anns, size=4) == ["2", "apple", "dog", "cat"]
    shuffled = list(anns)
    random.Random(1).shuffle(shuffled)
    assert build_answer_vocab(shuffled, size=4) == build_answer_vocab(anns, size=4)
    every = build_answer_vocab([_q(0, ["y", "x", "y", "z", "x", "y"], "other", "z")],
                               source="answers")
    assert every == ["y", "x", "z"]
    with pytest.raises(ValueError, match="source must be"):
        build_answer_vocab(anns, source="mc")


def test_soft_scores_variants():
    vocab = ["yes", "no", "2", "dog"]
    answers = ["yes"] * 3 + ["no"] * 2 + ["two"] + ["Dog"] * 4
    count = soft_scores(answers, vocab)
    assert count.shape == (4,) and count.dtype == torch.float32
    assert count.tolist() == pytest.approx([1.0, 2 / 3, 1 / 3, 1.0])
    loo = soft_scores(answers, vocab, variant="leave_one_out")
    assert loo.tolist() == pytest.approx([0.9, 0.6, 0.3, 1.0])
    # leave_one_out equals the metric's score of each answer
    for i, a in enumerate(vocab):
        assert loo[i].item() == pytest.approx(vqa_score(a, answers))
    as_map = soft_scores(answers, {a: i for i, a in enumerate(vocab)})
    assert torch.equal(as_map, count)
    assert soft_scores(["cat"] * 10, vocab).sum() == 0  # out of vocabulary
    assert soft_scores([], vocab).sum() == 0
    with pytest.raises(ValueError, match="variant"):
        soft_scores(answers, vocab, variant="mean")


def test_write_vqa_results(tmp_path):
    path = write_vqa_results(tmp_path / "out" / "res.json", {458752001: "2", 458752000: "net"})
    assert json.loads(path.read_text()) == [
        {"question_id": 458752000, "answer": "net"}, {"question_id": 458752001, "answer": "2"}]
    write_vqa_results(path, [(torch.tensor(5), "yes")])
    assert json.loads(path.read_text()) == [{"question_id": 5, "answer": "yes"}]
    with pytest.raises(ValueError, match="given twice"):
        write_vqa_results(path, [(1, "a"), (1, "b")])
    with pytest.raises(ValueError, match="not an integer"):
        write_vqa_results(path, [("1", "a")])
    with pytest.raises(ValueError, match="not a string"):
        write_vqa_results(path, [(1, 2)])
