"""The CIDEr-D reward scorer against pycocoevalcap's Cider on the same corpus."""

from __future__ import annotations

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from vlparse.eval.cider import CiderD

REFS = {
    1: ["a dog is running on the grass", "the dog runs on the green grass", "a dog in a field"],
    2: ["a man rides a red bike down the street", "a person riding a bicycle on a road"],
    3: ["two cats sleeping on a couch", "a pair of cats asleep on the sofa", "cats on a couch"],
    4: ["a plate of food with broccoli", "a white plate with meat and broccoli"],
    5: ["a dog and a man on the street", "a man walks his dog down a road"],
}


def pycoco(cands: dict[int, str]) -> np.ndarray:
    """Per-image Cider of pycocoevalcap with the references of exactly these images."""
    gts = {k: REFS[k] for k in cands}
    _, scores = Cider().compute_score(gts, {k: [c] for k, c in cands.items()})
    return np.asarray(scores)


def test_equals_pycocoevalcap_when_the_corpus_is_the_same():
    cands = {
        1: "a dog runs on the grass",
        2: "a man riding a bike on the street",
        3: "two cats sleeping on a couch",  # a reference itself
        4: "",  # an empty sample
        5: "a dog a dog on the street street",  # repeats: clipping binds
    }
    scorer = CiderD(REFS, tokenize=str.split)
    ours = scorer.score(list(cands), list(cands.values()))
    np.testing.assert_allclose(ours, pycoco(cands), rtol=1e-12, atol=1e-12)
    assert ours[3] == 0.0 and ours[2] > ours[0] > 0


def test_several_samples_of_one_image():
    scorer = CiderD(REFS, tokenize=str.split)
    samples = ["a dog on grass", "a dog runs on the green grass", "cats"]
    ours = scorer.score([1, 1, 1], samples)
    for i, s in enumerate(samples):  # each sample scored in its own pycocoevalcap run
        other = {k: "a" for k in REFS if k != 1}
        assert ours[i] == pytest.approx(pycoco({1: s, **other})[0], rel=1e-12)


def test_document_frequencies_come_from_the_training_corpus():
    scorer = CiderD(REFS, tokenize=str.split)
    assert scorer.num_images == 5
    assert scorer.document_frequency(("dog",)) == 2  # images 1 and 5; image 1 has it 3 times
    assert scorer.document_frequency(("on", "a")) == 2  # images 2 and 3
    # scored on its own, as pycocoevalcap would score a batch of one image, the idf differs
    alone = pycoco({1: "a dog runs on the grass"})[0]
    assert scorer.score([1], ["a dog runs on the grass"])[0] != pytest.approx(alone)


def test_strings_go_through_the_tokenizer():
    scorer = CiderD(REFS)  # simple PTB tokenizer: lower case, punctuation dropped
    plain = scorer.score([2], ["a man riding a bike on the street"])
    assert scorer.score([2], ["A man riding a bike, on the street."]) == pytest.approx(plain)
    assert scorer.score([2], [["a", "man", "riding"]])[0] > 0  # pre-tokenised input


def test_unknown_image():
    with pytest.raises(KeyError, match="no reference"):
        CiderD(REFS).score([9], ["a dog"])
