"""Positive maps from character spans: hand-made offsets, WordPiece and byte-level BPE."""

from __future__ import annotations

import pytest
import torch

from vlparse.processing.grounding import positive_map, tokenize_with_offsets
from vlparse.processing.tokenization import build_tokenizer

# "A man in an unbelievable hat ." cut after "unbeliev" (a truncated caption):
# [CLS] a man in an un ##bel ##iev [SEP]
OFFSETS = torch.tensor([[0, 0], [0, 1], [2, 5], [6, 8], [9, 11], [12, 14], [14, 17], [17, 20],
                        [0, 0]])


def _rows(m: torch.Tensor) -> list[list[int]]:
    return [r.nonzero().flatten().tolist() for r in m]


def test_hand_offsets_multi_token_overlap_edges_and_truncation():
    spans = [
        [(12, 24)],         # "unbelievable": every piece that survived truncation
        [(2, 8)],           # "man in"
        [(6, 11)],          # "in an": overlaps the previous box's span
        [(1, 5)],           # starts on the space before "man": no extra token
        [(3, 4)],           # inside "man"
        [(2, 5), (9, 11)],  # two spans of one box
        [(25, 28)],         # "hat": cut away by truncation
        [(5, 6)],           # the space between "man" and "in": no token
    ]
    m, found = positive_map(spans, OFFSETS)
    assert m.shape == (8, 9) and m.dtype == torch.bool
    assert _rows(m) == [[5, 6, 7], [2, 3], [3, 4], [2], [2], [2, 4], [], []]
    assert found.tolist() == [True] * 6 + [False, False]
    assert not m[:, 0].any() and not m[:, -1].any()  # special tokens never match


def test_fixed_width_and_bad_spans():
    m, _ = positive_map([[(0, 1)]], OFFSETS, num_tokens=256)
    assert m.shape == (1, 256) and _rows(m) == [[1]]
    with pytest.raises(ValueError, match="shorter"):
        positive_map([[(0, 1)]], OFFSETS, num_tokens=4)
    with pytest.raises(ValueError, match="not a character range"):
        positive_map([[(5, 2)]], OFFSETS)
    assert positive_map([], OFFSETS)[0].shape == (0, 9)


@pytest.fixture(scope="module")
def bert():
    return build_tokenizer("bert-base-uncased")


def test_wordpiece_pieces_and_punctuation(bert):
    caption = "A red-and-white umbrella, left of the dog."
    enc = tokenize_with_offsets(bert, [caption])
    pieces = bert.convert_ids_to_tokens(enc.input_ids[0])
    assert enc.offsets[0, 0].tolist() == [0, 0] and pieces[0] == "[CLS]"
    spans = [[(2, 24)],          # "red-and-white umbrella" (hyphens are tokens of their own)
             [(2, 25)],          # the same with the comma after it
             [(26, 30)],         # "left"
             [(38, 42)]]         # "dog." -> "dog" and "."
    m, found = positive_map(spans, enc.offsets[0])
    words = [[pieces[j] for j in row] for row in _rows(m)]
    assert words[0] == ["red", "-", "and", "-", "white", "umbrella"]
    assert words[1] == words[0] + [","]
    assert words[2] == ["left"]
    assert words[3] == ["dog", "."]
    assert found.all()


def test_multi_piece_word_and_truncation_cut(bert):
    caption = "an unbelievably tall giraffe"
    full = tokenize_with_offsets(bert, [caption])
    pieces = bert.convert_ids_to_tokens(full.input_ids[0])
    m, _ = positive_map([[(3, 15)]], full.offsets[0])
    got = [pieces[j] for j in _rows(m)[0]]
    assert len(got) > 1 and "".join(p.removeprefix("##") for p in got) == "unbelievably"
    cut = tokenize_with_offsets(bert, [caption], max_length=4)  # [CLS] an un.. [SEP]
    m, found = positive_map([[(3, 15)], [(21, 28)]], cut.offsets[0], num_tokens=8)
    assert found.tolist() == [True, False]
    assert cut.offsets[0, -1].tolist() == [0, 0]  # the closing [SEP] has no characters


def test_padding_tokens_have_no_characters(bert):
    enc = tokenize_with_offsets(bert, ["a dog", "a much longer caption here"], pad_to_max=True,
                                max_length=12)
    assert enc.input_ids.shape == (2, 12)
    pad = enc.attention_mask == 0
    assert (enc.offsets[pad] == 0).all()
    m, _ = positive_map([[(0, 5)]], enc.offsets[0])
    assert not m[0, pad[0]].any()


def test_slow_tokenizer_is_refused():
    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="fast tokenizer"):
        tokenize_with_offsets(Slow(), ["x"])


def _byte_level_bpe():
    """A tiny RoBERTa-style tokenizer (byte-level BPE, spaces glued to the next word)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=280, special_tokens=["<s>", "<pad>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(["a man in a red hat", "the small circle left of a square"] * 5,
                            trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def test_byte_level_bpe_spans_with_leading_space():
    tok = _byte_level_bpe()
    caption = "a man in a red hat"
    enc = tokenize_with_offsets(tok, [caption])
    pieces = tok.convert_ids_to_tokens(enc.input_ids[0])
    # the piece that starts "red" carries the space before it ("Ġ..."), but its trimmed offsets
    # start at the letter: a span that starts on the space takes no token of "a"
    m, _ = positive_map([[(10, 18)], [(11, 18)], [(11, 14)]], enc.offsets[0])
    rows = _rows(m)
    assert rows[0] == rows[1]
    red = [pieces[j] for j in rows[2]]
    assert red[0].startswith("Ġ") and "".join(red).removeprefix("Ġ") == "red"
    hat = [pieces[j] for j in rows[0][len(red):]]
    assert "".join(hat) == "Ġhat"
