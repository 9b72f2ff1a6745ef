"""CIDEr-D as a training reward, with document frequencies from the training references.

Self-critical training scores thousands of sampled captions per step against the references of
their images. ``pycocoevalcap``'s ``Cider`` recomputes the document frequencies from whatever it
is given, which for a batch would be the batch's few images; the reward must instead use the
document frequencies of the whole training corpus (CIDEr-D's idf is a corpus statistic). FIBER's
released code reads them from a file it never released; :class:`CiderD` counts them once from
the training references at construction.

The formula is ``pycocoevalcap``'s (Vedantam et al. 2015, CIDEr-D): for ``n = 1..4``, n-gram
count vectors weighted by ``tf * (log N - log max(1, df))`` where ``N`` is the number of
reference images; per reference, ``sum_g min(c_g, r_g) * r_g / (|c| |r|)`` (clipped cosine)
times ``exp(-(l_c - l_r)^2 / (2 sigma^2))`` with ``sigma = 6``; averaged over ``n`` and over
the references, times 10. As in ``pycocoevalcap``, the length ``l`` is the number of bigrams
(words - 1; 0 for an empty caption). Scores equal ``pycocoevalcap``'s when the references passed
here are the corpus passed there (tested).

This lives in ``eval`` (not ``objectives``) because it is a metric of strings, not a loss of
tensors: the caption task calls it and hands the rewards, as a tensor, to
:func:`vlparse.objectives.caption.self_critical_loss`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence

import numpy as np

from vlparse.eval.caption import simple_ptb_tokenize

__all__ = ["CiderD", "ngram_counts"]

NGram = tuple[str, ...]
Caption = str | Sequence[str]


def _ngrams(tokens: tuple[str, ...], n: int) -> Iterator[NGram]:
    return (tokens[i : i + k] for k in range(1, n + 1) for i in range(len(tokens) - k + 1))


def ngram_counts(tokens: Sequence[str], n: int = 4) -> Counter[NGram]:
    """Counts of every 1..n-gram of ``tokens``."""
    return Counter(_ngrams(tuple(tokens), n))


class _Vector:
    """tf-idf weights of one caption's n-grams, with the norm of each order and its length."""

    __slots__ = ("weights", "norms", "length")

    def __init__(
        self, counts: Counter[NGram], idf: Mapping[NGram, float], unseen_idf: float, n: int
    ) -> None:
        self.weights = {g: c * idf.get(g, unseen_idf) for g, c in counts.items()}
        sq = [0.0] * n
        for g, w in self.weights.items():
            sq[len(g) - 1] += w * w
        self.norms = [math.sqrt(s) for s in sq]
        self.length = sum(c for g, c in counts.items() if len(g) == 2)


class CiderD:
    """CIDEr-D scorer whose document frequencies come from a fixed reference corpus.

    Args:
        references: ``{image_key: [caption, ...]}``, the training references; each caption a
            string (tokenised by ``tokenize``) or a sequence of tokens.
        n: largest n-gram order.
        sigma: standard deviation of the Gaussian length penalty.
        tokenize: string -> tokens, applied to references and candidates alike; default
            :func:`~vlparse.eval.caption.simple_ptb_tokenize`.

    ``scorer.score(keys, captions)`` rates candidates against the references of their images.
    """

    def __init__(
        self,
        references: Mapping[Hashable, Sequence[Caption]],
        *,
        n: int = 4,
        sigma: float = 6.0,
        tokenize: Callable[[str], list[str]] = simple_ptb_tokenize,
    ) -> None:
        if not references:
            raise ValueError("CiderD: no reference captions")
        self.n, self.sigma, self.tokenize = n, float(sigma), tokenize
        self._refs: dict[Hashable, list[tuple[str, ...]]] = {}
        df: Counter[NGram] = Counter()
        for key, caps in references.items():
            if isinstance(caps, str) or not caps:
                raise ValueError(f"CiderD: image {key!r} needs a non-empty list of captions")
            toks = [self._tokens(c) for c in caps]
            self._refs[key] = toks
            df.update({g for t in toks for g in _ngrams(t, n)})
        self._log_n = math.log(len(self._refs))
        # idf of every reference n-gram; an n-gram no reference has gets log N (df taken as 1)
        self._idf = {g: self._log_n - math.log(c) for g, c in df.items()}

    def _tokens(self, caption: Caption) -> tuple[str, ...]:
        return tuple(self.tokenize(caption) if isinstance(caption, str) else caption)

    def _vector(self, tokens: Sequence[str]) -> _Vector:
        return _Vector(ngram_counts(tokens, self.n), self._idf, self._log_n, self.n)

    @property
    def num_images(self) -> int:
        """Number of reference images (the ``N`` of the idf)."""
        return len(self._refs)

    def document_frequency(self, gram: NGram) -> int:
        """Number of reference images in whose captions ``gram`` occurs."""
        idf = self._idf.get(tuple(gram))
        return 0 if idf is None else round(math.exp(self._log_n - idf))

    def _similarity(self, cand: _Vector, ref: _Vector) -> float:
        """Mean over n-gram orders of the clipped, length-penalised cosine."""
        dots = [0.0] * self.n
        for g, w in cand.weights.items():
            r = ref.weights.get(g)
            if r is not None:
                dots[len(g) - 1] += min(w, r) * r
        penalty = math.exp(-((cand.length - ref.length) ** 2) / (2 * self.sigma**2))
        total = 0.0
        for k in range(self.n):
            if cand.norms[k] != 0 and ref.norms[k] != 0:
                total += dots[k] / (cand.norms[k] * ref.norms[k])
            else:
                total += dots[k]
        return total * penalty / self.n

    def score(self, keys: Sequence[Hashable], captions: Sequence[Caption]) -> np.ndarray:
        """CIDEr-D of each caption against the references of its image.

        Args:
            keys: ``M`` image keys of ``references`` (repeat a key for several samples of an
                image; its reference vectors are built once per call).
            captions: ``M`` candidates, strings or token sequences.

        Returns:
            ``(M,)`` float64 scores (0-10 scale, as ``pycocoevalcap``'s per-image scores).
        """
        if len(keys) != len(captions):
            raise ValueError(f"CiderD.score: {len(keys)} keys for {len(captions)} captions")
        ref_vectors: dict[Hashable, list[_Vector]] = {}
        out = np.empty(len(captions), dtype=np.float64)
        for i, (key, caption) in enumerate(zip(keys, captions, strict=True)):
            if key not in ref_vectors:
                if key not in self._refs:
                    raise KeyError(f"CiderD.score: image {key!r} has no reference captions")
                ref_vectors[key] = [self._vector(t) for t in self._refs[key]]
            refs = ref_vectors[key]
            cand = self._vector(self._tokens(caption))
            out[i] = 10.0 * sum(self._similarity(cand, r) for r in refs) / len(refs)
        return out
