"""Caption metrics with the official tools, and a nearest-neighbour caption baseline.

BLEU-1..4, METEOR, ROUGE-L and CIDEr-D come from ``pycocoevalcap`` (the COCO caption evaluation
code; its ``Cider`` is the CIDEr-D formula), after its Stanford PTB tokenizer. Both the tokenizer
and METEOR run on Java. Without Java, METEOR is skipped with a warning and
:func:`simple_ptb_tokenize` stands in for the PTB tokenizer; the scores say which tokenizer ran.
SPICE is always skipped (it downloads Stanford models on first use, so it fails offline).

Metric names are those of ``pycocoevalcap``'s ``COCOEvalCap`` (``Bleu_1`` .. ``Bleu_4``,
``METEOR``, ``ROUGE_L``, ``CIDEr``), on its 0-1 scale (papers print 100x).

Image ids: results and references are matched by ``image_id``; a string of digits is read as
the integer it spells (JSON object keys are strings), so ``"391895"`` matches ``391895``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vlparse.errors import DataFormatError
from vlparse.io.files import atomic_write_text

__all__ = [
    "PTB_PUNCTUATIONS",
    "CaptionScores",
    "simple_ptb_tokenize",
    "tokenize_captions",
    "load_caption_references",
    "caption_scores",
    "evaluate_captions",
    "nearest_neighbours",
    "nearest_neighbour_captions",
]

PTB_PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
     ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)  # fmt: skip
"""Tokens that ``pycocoevalcap``'s PTB tokenizer drops after tokenising. Its output is
lower-cased, so the bracket tokens come out as ``-lrb-`` etc. and are *not* dropped."""

_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_CLITIC_NT = re.compile(r"(\w)(n't)\b")
_CLITIC = re.compile(r"(\w)('(?:s|re|ve|ll|d|m))\b")
_TOKEN = re.compile(
    r"n't|'(?:s|re|ve|ll|d|m)\b"  # clitics split off above
    r"|\w+(?:\.\w+)+\.(?!\w)"  # abbreviations with their final period: u.s.
    r"|\d+(?::\d+)+"  # times: 5:30
    r"|[\w@]+(?:[-./,'&][\w@]+)*"  # words, hyphenated words, numbers 3.5 and 1,000, a/b
    r"|\.\.\.|--|[?!]{2,}|\S"  # punctuation: ?! is one token (kept), the rest one each
)


def simple_ptb_tokenize(text: str) -> list[str]:
    """An approximation of the PTB tokenizer as ``pycocoevalcap`` runs it, in pure Python.

    Lower-cases; splits off the clitics ``n't 's 're 've 'll 'd 'm`` (``don't`` -> ``do n't``);
    keeps hyphenated words, numbers (``3.5``, ``1,000``, ``5:30``) and abbreviations (``u.s.``)
    whole; turns brackets into ``-lrb-``/``-rrb-``/...; makes every other punctuation character a
    token (a run like ``?!`` one token); then drops the tokens of :data:`PTB_PUNCTUATIONS`
    (double quotes included, which PTB turns into ``````/``''``). It agrees with the Java
    tokenizer on ordinary captions (tested); rarer cases (URLs, emoticons, some abbreviations)
    may differ.
    """
    text = " ".join(text.lower().splitlines()).replace('"', " ")
    text = _CLITIC.sub(r"\1 \2", _CLITIC_NT.sub(r"\1 \2", text))
    tokens = (_BRACKETS.get(t, t) for t in _TOKEN.findall(text))
    return [t for t in tokens if t not in PTB_PUNCTUATIONS]


def java_available() -> bool:
    """Whether a ``java`` executable is on ``PATH``."""
    return shutil.which("java") is not None


def tokenize_captions(
    captions: Mapping[Hashable, Sequence[str]], *, java: bool | None = None
) -> tuple[dict[Hashable, list[str]], str]:
    """Tokenise captions for the scorers: ``{key: [caption, ...]}`` -> space-joined tokens.

    Args:
        captions: captions of each image.
        java: use the Java PTB tokenizer; ``None`` uses it when ``java`` is on ``PATH``.

    Returns:
        ``(tokenized, name)``: the same keys with each caption as space-separated tokens, and the
        tokenizer that ran, ``"ptb"`` or ``"simple_ptb"`` (:func:`simple_ptb_tokenize`).
    """
    if java is None:
        java = java_available()
    if java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        # one caption per line: any line break inside a caption would shift every later caption
        wrapped = {
            k: [{"caption": " ".join(c.splitlines())} for c in caps] for k, caps in captions.items()
        }
        return PTBTokenizer().tokenize(wrapped), "ptb"
    tokenized = {
        k: [" ".join(simple_ptb_tokenize(c)) for c in caps] for k, caps in captions.items()
    }
    return tokenized, "simple_ptb"


def _image_id(value: Any, where: str) -> Hashable:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise DataFormatError(f"{where}: image_id must be an int or a string, got {value!r}")
    return int(value) if isinstance(value, str) and value.isdigit() else value


def load_caption_references(
    source: str | os.PathLike | Mapping[str, Any] | Mapping[Hashable, Sequence[str]],
) -> dict[Hashable, list[str]]:
    """References as ``{image_id: [caption, ...]}``.

    ``source`` is a COCO captions file or object (``{"annotations": [{"image_id", "caption"},
    ...], ...}``), or a mapping ``image_id -> list of captions`` (or a JSON file holding one).
    """
    where = os.fspath(source) if isinstance(source, str | os.PathLike) else "references"
    if isinstance(source, str | os.PathLike):
        with open(source, encoding="utf-8") as f:
            source = json.load(f)
    if not isinstance(source, Mapping):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(source).__name__}")
    refs: dict[Hashable, list[str]] = {}
    if "annotations" in source:
        for i, ann in enumerate(source["annotations"]):
            if not isinstance(ann, Mapping) or "image_id" not in ann or "caption" not in ann:
                raise DataFormatError(f"{where}: annotations[{i}] needs 'image_id' and 'caption'")
            key = _image_id(ann["image_id"], f"{where}: annotations[{i}]")
            refs.setdefault(key, []).append(str(ann["caption"]))
        return refs
    for key, caps in source.items():
        if isinstance(caps, str) or not isinstance(caps, Sequence) or not caps:
            raise DataFormatError(f"{where}: image {key!r} needs a non-empty list of captions")
        refs[_image_id(key, where)] = [str(c) for c in caps]
    return refs


def _results_by_image(
    results: Sequence[Mapping[str, Any]], refs: Mapping[Hashable, list[str]]
) -> dict[Hashable, list[str]]:
    res: dict[Hashable, list[str]] = {}
    for i, r in enumerate(results):
        if not isinstance(r, Mapping) or "image_id" not in r or "caption" not in r:
            raise DataFormatError(f"results[{i}] needs 'image_id' and 'caption', got {r!r}")
        key = _image_id(r["image_id"], f"results[{i}]")
        if key in res:
            raise DataFormatError(f"results[{i}]: image {key!r} has more than one caption")
        if key not in refs:
            raise DataFormatError(f"results[{i}]: image {key!r} has no reference captions")
        res[key] = [str(r["caption"])]
    if not res:
        raise DataFormatError("results: no captions to score")
    return res


@dataclass
class CaptionScores:
    """Corpus-level caption metrics and how they were computed."""

    metrics: dict[str, float]
    tokenizer: str  # "ptb" (Stanford PTB tokenizer, Java) or "simple_ptb" (pure Python)
    num_images: int
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> why it was not computed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def caption_scores(
    results: Sequence[Mapping[str, Any]],
    references: Any,
    *,
    java: bool | None = None,
) -> CaptionScores:
    """Score generated captions with ``pycocoevalcap``.

    Args:
        results: ``[{"image_id", "caption"}, ...]``, one caption per image (the COCO results
            format); every image must have references. Only these images are scored.
        references: anything :func:`load_caption_references` reads.
        java: run the Java PTB tokenizer and METEOR; ``None`` detects Java on ``PATH``. ``False``
            uses :func:`simple_ptb_tokenize` and skips METEOR, each with a warning.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs = load_caption_references(references)
    res = _results_by_image(results, refs)
    if java is None:
        java = java_available()
    skipped = {"SPICE": "not run: it downloads Stanford CoreNLP models on first use"}
    if not java:
        skipped["METEOR"] = "not run: Java is not available"
        warnings.warn(
            "caption metrics without Java: METEOR skipped, PTB tokenizer replaced by "
            "simple_ptb_tokenize (scores may differ slightly from the official ones)",
            stacklevel=2,
        )
    warnings.warn(f"caption metrics: SPICE {skipped['SPICE']}", stacklevel=2)
    # one tokenizer call for both sides, as COCOEvalCap does
    both, tokenizer = tokenize_captions(
        {**{("gts", k): refs[k] for k in res}, **{("res", k): v for k, v in res.items()}},
        java=java,
    )
    gts = {k: both[("gts", k)] for k in res}
    hyp = {k: both[("res", k)] for k in res}
    metrics: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, hyp, verbose=0)
    metrics.update({f"Bleu_{n + 1}": float(b) for n, b in enumerate(bleu)})
    if java:
        from pycocoevalcap.meteor.meteor import Meteor

        metrics["METEOR"] = float(Meteor().compute_score(gts, hyp)[0])
    metrics["ROUGE_L"] = float(Rouge().compute_score(gts, hyp)[0])
    metrics["CIDEr"] = float(Cider().compute_score(gts, hyp)[0])
    return CaptionScores(metrics, tokenizer, len(res), skipped)


def evaluate_captions(
    results: Sequence[Mapping[str, Any]],
    references: Any,
    out_dir: str | os.PathLike,
    *,
    java: bool | None = None,
    results_name: str = "caption_results.json",
    metrics_name: str = "caption_metrics.json",
) -> CaptionScores:
    """:func:`caption_scores`, writing the COCO results file and the metrics JSON to ``out_dir``.

    The results file is ``[{"image_id", "caption"}, ...]`` as given; the metrics JSON is
    :meth:`CaptionScores.to_dict` (metrics, tokenizer, number of images, skipped metrics).
    """
    scores = caption_scores(results, references, java=java)
    out = Path(out_dir)
    rows = [{"image_id": r["image_id"], "caption": r["caption"]} for r in results]
    atomic_write_text(out / results_name, json.dumps(rows) + "\n")
    atomic_write_text(out / metrics_name, json.dumps(scores.to_dict(), indent=1) + "\n")
    return scores


def nearest_neighbours(queries: Tensor, keys: Tensor, *, chunk: int = 1024) -> Tensor:
    """Index of the most cosine-similar key of each query (ties: the lowest index).

    Args:
        queries: ``(Q, D)`` features.
        keys: ``(N, D)`` features.
        chunk: queries compared at a time (bounds the ``(chunk, N)`` similarity block).

    Returns:
        ``(Q,)`` long indices into ``keys``.
    """
    if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(
            f"nearest_neighbours: expected (Q, D) and (N, D), got {tuple(queries.shape)} and "
            f"{tuple(keys.shape)}"
        )
    if keys.shape[0] == 0:
        raise ValueError("nearest_neighbours: no keys to search")
    k = F.normalize(keys.float(), dim=-1)
    parts = [(F.normalize(q.float(), dim=-1) @ k.T).argmax(dim=1) for q in queries.split(chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def nearest_neighbour_captions(
    query_features: Tensor, train_features: Tensor, train_captions: Sequence[str]
) -> list[str]:
    """The caption baseline that copies the caption of the most similar training image.

    Args:
        query_features: ``(Q, D)`` features of the images to caption (e.g. ITC image features).
        train_features: ``(N, D)`` features of the training images, same space.
        train_captions: ``N`` captions, one per training image (the caller picks which of an
            image's captions stands for it).

    Returns:
        ``Q`` captions: for each query, the caption of the training image of highest cosine
        similarity.
    """
    if len(train_captions) != train_features.shape[0]:
        raise ValueError(
            f"nearest_neighbour_captions: {len(train_captions)} captions for "
            f"{train_features.shape[0]} training images"
        )
    return [train_captions[i] for i in nearest_neighbours(query_features, train_features).tolist()]
