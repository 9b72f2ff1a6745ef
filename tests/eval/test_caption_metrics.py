"""Caption metrics against the formulas (BLEU, CIDEr-D by brute force) and pycocoevalcap."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

from vlparse.errors import DataFormatError
from vlparse.eval.caption import (
    caption_scores,
    evaluate_captions,
    java_available,
    load_caption_references,
    nearest_neighbour_captions,
    simple_ptb_tokenize,
    tokenize_captions,
)

needs_java = pytest.mark.skipif(not java_available(), reason="Java is not installed")

# Two images; the captions are already lower-case words so every tokenizer gives the same tokens.
REFS = {
    "images": [{"id": 1}, {"id": 2}],
    "annotations": [
        {"image_id": 1, "id": 10, "caption": "a dog is running on the grass"},
        {"image_id": 1, "id": 11, "caption": "the dog runs on the green grass"},
        {"image_id": 1, "id": 12, "caption": "a brown dog plays in a field"},
        {"image_id": 2, "id": 20, "caption": "a man rides a red bike down the street"},
        {"image_id": 2, "id": 21, "caption": "a person riding a bicycle on a road"},
    ],
}
RESULTS = [
    {"image_id": 1, "caption": "a dog a dog runs on the grass"},  # repeats: clipping binds
    {"image_id": 2, "caption": "a man riding a bike on the street"},
]
CANDS = {1: RESULTS[0]["caption"].split(), 2: RESULTS[1]["caption"].split()}
GTS = {
    1: [a["caption"].split() for a in REFS["annotations"][:3]],
    2: [a["caption"].split() for a in REFS["annotations"][3:]],
}


def _grams(words, n):
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def bleu_by_formula(cands, refs, max_n=4):
    """Corpus BLEU: clipped n-gram precisions, brevity penalty on the closest reference lengths."""
    c_len = sum(len(c) for c in cands.values())
    r_len = sum(min((abs(len(r) - len(cands[k])), len(r)) for r in refs[k])[1] for k in cands)
    precisions = []
    for n in range(1, max_n + 1):
        match = total = 0
        for k, cand in cands.items():
            counts = _grams(cand, n)
            best = Counter()
            for r in refs[k]:
                best |= _grams(r, n)  # max count over the references
            match += sum(min(c, best[g]) for g, c in counts.items())
            total += sum(counts.values())
        precisions.append(match / total)
    bp = 1.0 if c_len >= r_len else math.exp(1 - r_len / c_len)
    return [bp * math.exp(sum(map(math.log, precisions[:n])) / n) for n in range(1, max_n + 1)]


def cider_d_by_formula(cands, refs, sigma=6.0):
    """CIDEr-D from its definition, with dense tf-idf vectors over every n-gram of the corpus."""
    num_images = len(refs)
    scores = {}
    for k, cand in cands.items():
        total = 0.0
        for n in range(1, 5):
            ref_grams = {g for rs in refs.values() for r in rs for g in _grams(r, n)}
            vocab = sorted(ref_grams | set(_grams(cand, n)))
            df = {g: sum(any(g in _grams(r, n) for r in rs) for rs in refs.values()) for g in vocab}
            idf = np.array([math.log(num_images) - math.log(max(1, df[g])) for g in vocab])

            def vec(words, n=n, vocab=vocab, idf=idf):
                counts = _grams(words, n)
                return np.array([counts[g] for g in vocab], dtype=float) * idf

            c = vec(cand)
            for r_words in refs[k]:
                r = vec(r_words)
                clipped = np.minimum(c, r) @ r
                norm = np.linalg.norm(c) * np.linalg.norm(r)
                penalty = math.exp(-((len(cand) - len(r_words)) ** 2) / (2 * sigma**2))
                total += (clipped / norm if norm else 0.0) * penalty
        scores[k] = 10.0 * total / 4 / len(refs[k])
    return scores


def test_bleu_and_cider_d_equal_their_formulas():
    with pytest.warns(UserWarning) as record:
        scores = caption_scores(RESULTS, REFS, java=False)
    assert any("METEOR skipped" in str(w.message) for w in record)
    expected_bleu = bleu_by_formula(CANDS, GTS)
    for n in range(4):
        assert scores.metrics[f"Bleu_{n + 1}"] == pytest.approx(expected_bleu[n], rel=1e-6)
    cider = cider_d_by_formula(CANDS, GTS)
    assert scores.metrics["CIDEr"] == pytest.approx(np.mean(list(cider.values())), rel=1e-9)
    assert 0 < scores.metrics["Bleu_4"] < scores.metrics["Bleu_1"] < 1


def test_scores_equal_the_pycocoevalcap_scorers():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {k: [" ".join(r) for r in v] for k, v in GTS.items()}
    res = {k: [" ".join(v)] for k, v in CANDS.items()}
    with pytest.warns(UserWarning):
        scores = caption_scores(RESULTS, REFS, java=False)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert [scores.metrics[f"Bleu_{n}"] for n in range(1, 5)] == pytest.approx(bleu, rel=1e-12)
    assert scores.metrics["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0], rel=1e-12)
    assert scores.metrics["ROUGE_L"] == pytest.approx(Rouge().compute_score(gts, res)[0])


def test_without_java_says_which_tokenizer_ran():
    with pytest.warns(UserWarning) as record:
        scores = caption_scores(RESULTS, REFS, java=False)
    assert scores.tokenizer == "simple_ptb"
    assert "METEOR" not in scores.metrics and "METEOR" in scores.skipped
    assert "SPICE" in scores.skipped
    assert any("SPICE" in str(w.message) for w in record)
    assert scores.num_images == 2


@needs_java
def test_with_java_runs_ptb_and_meteor():
    with pytest.warns(UserWarning, match="SPICE"):
        scores = caption_scores(RESULTS, REFS, java=True)
    assert scores.tokenizer == "ptb"
    assert 0 < scores.metrics["METEOR"] < 1
    assert set(scores.skipped) == {"SPICE"}
    with pytest.warns(UserWarning):
        plain = caption_scores(RESULTS, REFS, java=False)
    for name, value in plain.metrics.items():  # the two tokenizers agree on these captions
        assert scores.metrics[name] == pytest.approx(value, rel=1e-12)


CAPTIONS = [
    "A man riding a moped on a dirt road.",
    "Two  people   on a well-lit street...",
    "Don't stop: the U.S. man's 3.5 dogs (big) & cats/birds -- \"yes\"",
    "A 2-year-old boy eats pizza at Joe's, it's 5:30 p.m.",
    "The dogs' bone is 1,000 miles away; won't you come?!",
    "a bathroom with a toilet , sink and mirror [left] {right}",
    "A man's hand holding a hot-dog w/ mustard\n",
    "a dog\rand a cat\u2028on a mat",  # line breaks must not shift the captions after them
    "TWO ZEBRAS GRAZING IN A FIELD $5 50% #1",
    "",
]


@needs_java
def test_simple_tokenizer_agrees_with_the_ptb_tokenizer():
    ptb, name = tokenize_captions({i: [c] for i, c in enumerate(CAPTIONS)}, java=True)
    assert name == "ptb"
    for i, caption in enumerate(CAPTIONS):
        assert " ".join(simple_ptb_tokenize(caption)) == ptb[i][0], caption


def test_simple_tokenizer_by_hand():
    expected = "do n't the dog 's -lrb- big -rrb- toy yes".split()
    assert simple_ptb_tokenize("Don't, the Dog's (big) toy... yes!") == expected


def test_evaluate_writes_results_and_metrics(tmp_path):
    with pytest.warns(UserWarning):
        scores = evaluate_captions(RESULTS, REFS, tmp_path / "eval", java=False)
    assert json.loads((tmp_path / "eval" / "caption_results.json").read_text()) == RESULTS
    saved = json.loads((tmp_path / "eval" / "caption_metrics.json").read_text())
    assert saved == scores.to_dict()
    assert saved["tokenizer"] == "simple_ptb" and saved["metrics"]["CIDEr"] > 0


def test_references_in_both_formats(tmp_path):
    as_dict = {"1": [a["caption"] for a in REFS["annotations"][:3]], "2": ["x", "y"]}
    path = tmp_path / "refs.json"
    path.write_text(json.dumps(REFS))
    coco = load_caption_references(path)
    assert coco[1] == as_dict["1"] and len(coco[2]) == 2
    assert load_caption_references(as_dict)[1] == as_dict["1"]  # "1" is image 1


def test_bad_results_are_reported():
    with pytest.raises(DataFormatError, match="no reference"):
        caption_scores([{"image_id": 3, "caption": "a"}], REFS, java=False)
    with pytest.raises(DataFormatError, match="more than one"):
        caption_scores(RESULTS + RESULTS[:1], REFS, java=False)
    with pytest.raises(DataFormatError, match="needs 'image_id' and 'caption'"):
        caption_scores([{"image_id": 1}], REFS, java=False)


def test_nearest_neighbour_caption_uses_cosine_similarity():
    train = torch.tensor([[10.0, 10.0], [1.0, 0.1], [0.0, 1.0]])
    captions = ["diagonal", "mostly x", "y"]
    queries = torch.tensor([[1.0, 0.0], [0.1, 0.9], [3.0, 2.9]])
    # by dot product the long diagonal vector would win every query
    assert nearest_neighbour_captions(queries, train, captions) == ["mostly x", "y", "diagonal"]
    with pytest.raises(ValueError, match="2 captions"):
        nearest_neighbour_captions(queries, train, captions[:2])
