"""Modality NMI probe (paper section 4.4, Figure 5).

For every layer's output, each sample's token features are split into two clusters with
k-means (k = 2) and the clusters are compared with the ground-truth vision / language split by
Normalized Mutual Information (arithmetic normalisation, as scikit-learn's
``normalized_mutual_info_score``). A larger NMI means the two modalities stay apart (less
fusion). The reported value is the mean over samples.

Labels follow :mod:`vlparse.probing.imf`: ``(B, N)`` ints, 1 vision, 0 language, -1 excluded.
``FusionOutput.modality`` labels ``[CLS]`` and ``[SEP]`` as language; use
:func:`vlparse.probing.imf.relabel_special` to change that.

Two backends compute the clustering:

* ``"torch"`` (default): every sample and hidden state at once on the features' device (the
  GPU during ``vlparse probe``), with no host synchronisation. Lloyd's algorithm runs in kernel
  form on each sample's ``(N, N)`` Gram matrix of mean-centred features (float32 by default,
  autocast off) for a fixed ``max_iter = 30`` steps (it typically converges in under 10 on
  ``paper``-size states) from ``n_init = 10`` starts: one farthest-point start (the token
  farthest from the mean, then the token farthest from it) and ``n_init - 1`` k-means++ starts
  drawn from a counter-based hash of ``(seed, state, start, token)``; the start with the lowest
  inertia wins, as in scikit-learn. The draws do not depend on the batch, so a sample gets the
  same clustering alone or batched, with any amount of padding.
* ``"sklearn"``: scikit-learn's ``KMeans(n_clusters=2, n_init=10, random_state=seed)`` per
  sample and state on the CPU (~70 ms per fit at ``paper`` size; 13 fits per sample).

``"torch"`` is the default because the CPU fits would cost about twenty times the model's own
forward pass (at ``paper`` size); the GPU path adds a few percent. k-means is a heuristic: on
data without a clear two-cluster structure the two backends (and scikit-learn with different
seeds) can find different local optima, so per-sample scores can differ; on well-separated data
they agree. The NMI of a given clustering is computed exactly as scikit-learn does, including
its degenerate cases (one class and one cluster: 1.0; one of the two only: 0.0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from vlparse.probing._mean import SampleMean

__all__ = [
    "NMIAccumulator",
    "binary_nmi",
    "modality_nmi",
    "modality_nmi_per_sample",
    "two_means",
]

Backend = Literal["torch", "sklearn"]
_MASK31 = 0x7FFFFFFF
_INVALID_HINT = (
    "had modality labels other than 1, 0, -1 or fewer than 2 non-excluded tokens; check the "
    "batches with modality_nmi_per_sample, which names the samples"
)


# --------------------------------------------------------------------------- checks


def _check_shapes(hidden_states: Sequence[Tensor], modality: Tensor, where: str) -> None:
    """Shape checks only (no device synchronisation)."""
    if len(hidden_states) == 0:
        raise ValueError(f"{where}: got no hidden states; pass (B, N, D) tensors, one per layer.")
    batch, tokens = hidden_states[0].shape[:2]
    for s, h in enumerate(hidden_states):
        if h.dim() != 3 or tuple(h.shape[:2]) != (batch, tokens):
            raise ValueError(
                f"{where}: hidden state {s} has shape {tuple(h.shape)}, expected "
                f"({batch}, {tokens}, D) like hidden state 0."
            )
    if modality.dim() != 2 or tuple(modality.shape) != (batch, tokens):
        raise ValueError(
            f"{where}: modality must be (B, N) = ({batch}, {tokens}), got {tuple(modality.shape)}."
        )
    if modality.is_floating_point() or modality.is_complex():
        raise ValueError(f"{where}: modality must hold integers (1, 0, -1), got {modality.dtype}.")


def _invalid_samples(modality: Tensor) -> Tensor:
    """``(B,)`` bool on ``modality``'s device: bad labels or fewer than 2 kept tokens."""
    bad = ~((modality == 1) | (modality == 0) | (modality == -1))
    return bad.any(dim=1) | ((modality >= 0).sum(dim=1) < 2)


def _check_values(modality: Tensor, where: str) -> None:
    """Value checks with clear messages (synchronises with the device)."""
    if bool((~((modality == 1) | (modality == 0) | (modality == -1))).any()):
        raise ValueError(f"{where}: modality may only hold 1 (vision), 0 (language) or -1.")
    counts = (modality >= 0).sum(dim=1)
    if bool((counts < 2).any()):
        idx = torch.nonzero(counts < 2).flatten().tolist()
        raise ValueError(
            f"{where}: samples {idx} have fewer than 2 non-excluded tokens; k-means with k = 2 "
            "needs at least 2. Drop them."
        )


# --------------------------------------------------------------------------- NMI


def binary_nmi(labels_true: Tensor, labels_pred: Tensor, valid: Tensor) -> Tensor:
    """NMI of two 2-way labelings, batched, as ``sklearn.metrics.normalized_mutual_info_score``.

    Args:
        labels_true: ``(..., N)`` ints or bools in ``{0, 1}`` (values at excluded tokens ignored).
        labels_pred: ``(..., N)`` ints or bools in ``{0, 1}``.
        valid: ``(..., N)`` bool, the tokens that count.

    Returns:
        ``(...)`` float64 on the inputs' device: arithmetic-mean normalisation; 1.0 where both
        labelings have a single value (or no token counts), 0.0 where only one of them does.
    """
    t, p, v = labels_true.bool(), labels_pred.bool(), valid.bool()
    cells = torch.stack(
        [((t == ti) & (p == pj) & v).sum(-1) for ti in (False, True) for pj in (False, True)], -1
    ).to(torch.float64)
    cells = cells.unflatten(-1, (2, 2))  # (..., 2 classes, 2 clusters)
    n = cells.sum((-1, -2))
    pi, pj = cells.sum(-1), cells.sum(-2)  # (..., 2) class and cluster sizes
    n_classes, n_clusters = (pi > 0).sum(-1), (pj > 0).sum(-1)
    nz = cells > 0
    n_ = n[..., None, None]
    share = cells / n_
    log_outer = (
        -torch.log(pi[..., :, None] * pj[..., None, :])
        + torch.log(pi.sum(-1))[..., None, None]
        + torch.log(pj.sum(-1))[..., None, None]
    )
    term = share * (torch.log(cells) - torch.log(n_)) + share * log_outer
    eps = torch.finfo(torch.float64).eps
    term = torch.where(nz & (term.abs() >= eps), term, torch.zeros_like(term))
    mi = term.sum((-1, -2)).clamp_min(0.0)
    mi = torch.where((n_classes == 1) | (n_clusters == 1), torch.zeros_like(mi), mi)

    def entropy(sizes: Tensor) -> Tensor:
        total = sizes.sum(-1, keepdim=True)
        h = (sizes / total) * (torch.log(sizes) - torch.log(total))
        return -torch.where(sizes > 0, h, torch.zeros_like(h)).sum(-1)

    norm = 0.5 * (entropy(pi) + entropy(pj))
    nmi = torch.where(mi == 0, torch.zeros_like(mi), mi / torch.where(mi == 0, 1.0, norm))
    same = n_classes == n_clusters
    return torch.where(same & (n_classes <= 1), torch.ones_like(nmi), nmi)


# --------------------------------------------------------------------------- 2-means


def _mix(h: Tensor) -> Tensor:
    """A 31-bit integer hash step (int64 arithmetic that never overflows)."""
    h = h ^ (h >> 16)
    h = (h * 0x45D9F3B) & _MASK31
    h = h ^ (h >> 15)
    h = (h * 0x2C1B3C6D >> 3) & _MASK31
    return h ^ (h >> 16)


def _hash_uniform(seed: int, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Float64 uniforms in ``(0, 1)`` of ``shape``, a pure function of ``seed`` and the index."""
    h = torch.tensor(seed & _MASK31, dtype=torch.int64, device=device)
    for dim, size in enumerate(shape):
        view = [1] * len(shape)
        view[dim] = size
        idx = torch.arange(size, dtype=torch.int64, device=device).view(view)
        h = _mix(((h ^ idx) + 0x2545F491) & _MASK31)
    return (h.to(torch.float64) + 0.5) / 2.0**31


def _centred_grams(hidden_states: Sequence[Tensor], valid: Tensor, dtype: torch.dtype) -> Tensor:
    """``(B, S, N, N)`` Gram matrices of the mean-centred kept tokens (excluded rows are 0)."""
    keep = valid[:, None, :, None]  # (B, 1, N, 1)
    x = torch.stack([h.detach().to(valid.device) for h in hidden_states], dim=1).to(dtype)
    x = torch.where(keep, x, 0.0)  # (B, S, N, D); whatever excluded tokens hold is dropped
    count = keep.sum(dim=2, keepdim=True).clamp_min(1).to(dtype)
    x = torch.where(keep, x - x.sum(dim=2, keepdim=True) / count, 0.0)
    return x @ x.transpose(-1, -2)


def _two_means_gram(
    gram: Tensor, valid: Tensor, seed: int, n_init: int, max_iter: int
) -> tuple[Tensor, Tensor]:
    """Kernel Lloyd 2-means on centred Gram matrices ``(B, S, N, N)``; kept tokens ``(B, N)``.

    The state of each start is its assignment ``a`` (1 = cluster 1). With the data centred,
    the mean of cluster 0 is ``-n1 / n0`` times the mean of cluster 1, so a token ``x`` joins
    cluster 1 (closer to its mean) iff ``2 (K a)_x > a.K a (n0 - n1) / (n1 n0)``: one batched
    matrix-vector product per start and iteration, no centres stored, a handful of kernels.

    Returns:
        ``labels`` ``(B, S, N)`` long in ``{0, 1}`` (0 at excluded tokens) and the best start's
        ``inertia`` ``(B, S)``: the sum of squared distances to the cluster means.
    """
    b, s, n, _ = gram.shape
    dt, dev = gram.dtype, gram.device
    v = valid[:, None, None, :]  # (B, 1, 1, N)
    neg_inf = torch.tensor(float("-inf"), dtype=dt, device=dev)
    sq = gram.diagonal(dim1=-2, dim2=-1)  # (B, S, N) squared norms (centred)
    gumbel = -torch.log(-torch.log(_hash_uniform(seed, (s, n_init, 2, n), dev))).to(dt)

    # first centres: start 0 the token farthest from the mean, the others uniform (Gumbel-max)
    far = torch.where(valid[:, None, :], sq, neg_inf).argmax(-1, keepdim=True)  # (B, S, 1)
    rand = torch.where(v, gumbel[None, :, :, 0, :], neg_inf).argmax(-1)  # (B, S, R)
    first = torch.cat([far, rand[..., 1:]], dim=-1)
    rows0 = torch.gather(gram, 2, first[..., None].expand(b, s, n_init, n))  # (B, S, R, N)
    sq0 = sq.gather(-1, first)[..., None]  # (B, S, R, 1)
    d2 = (sq[:, :, None, :] + sq0 - 2.0 * rows0).clamp_min(0.0)
    # second centres: start 0 the farthest from the first, the others k-means++ (P ~ d^2)
    far2 = torch.where(v, d2, neg_inf).argmax(-1)
    score = torch.where(v & (d2 > 0), torch.log(d2) + gumbel[None, :, :, 1, :], neg_inf)
    pp = torch.where(torch.isfinite(score).any(-1), score.argmax(-1), first)
    second = torch.cat([far2[..., :1], pp[..., 1:]], dim=-1)
    rows1 = torch.gather(gram, 2, second[..., None].expand(b, s, n_init, n))
    sq1 = sq.gather(-1, second)[..., None]
    # first assignment: to the closer of the two tokens (ties to the first, like an argmin)
    ones = (2.0 * (rows1 - rows0) > sq1 - sq0) & v

    # excluded tokens get a bias below any threshold (|thr| <= N tr K / 2), so they stay in 0
    n_kept = v.sum(-1, keepdim=True).to(dt).expand(b, s, 1, 1).reshape(b * s, 1, 1)
    trace = sq.sum(-1).reshape(b * s, 1, 1)
    bias = torch.where(v.expand(b, s, 1, n).reshape(b * s, 1, n), 0.0, -(n * trace + 1.0) * 2)
    k3 = gram.reshape(b * s, n, n)
    a = ones.to(dt).reshape(b * s, n_init, n)

    def cluster_stats(a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        ka = torch.baddbmm(bias, a, k3)  # (BS, R, N): n1 <x, mean_1>, biased at excluded x
        q = (a[..., None, :] @ ka[..., :, None])[..., 0]  # (BS, R, 1): a.K a = n1^2 |mean_1|^2
        return ka, q, a.sum(-1, keepdim=True)

    for _ in range(max_iter):
        ka, q, n1 = cluster_stats(a)
        # 2 <x, m1 - m0> > |m1|^2 - |m0|^2, with m0 = -n1 / n0 m1 and n0 = N - n1; an empty
        # cluster 1 (identical tokens) gives ka = 0 and thr = 0, so it stays empty
        thr = q * (n_kept - 2.0 * n1) / (2.0 * n1 * (n_kept - n1)).clamp_min(1.0)
        a = (ka > thr).to(dt)

    _, q, n1 = cluster_stats(a)
    split = n1 * (n_kept - n1)
    explained = torch.where(split > 0, q * n_kept / split.clamp_min(1.0), 0.0)
    inertia = (trace - explained).reshape(b, s, n_init)  # sum |x|^2 - n1|m1|^2 - n0|m0|^2
    a = a.reshape(b, s, n_init, n)
    best = inertia.argmin(-1, keepdim=True)  # (B, S, 1): the first start on ties
    labels = torch.gather(a, 2, best[..., None].expand(b, s, 1, n)).squeeze(2)
    return labels.long(), inertia.gather(-1, best).squeeze(-1)


def two_means(
    features: Tensor,
    valid: Tensor,
    seed: int = 0,
    n_init: int = 10,
    max_iter: int = 30,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Batched 2-means clustering of each sample's kept tokens (the ``torch`` backend).

    Args:
        features: ``(B, N, D)`` token features.
        valid: ``(B, N)`` bool, the tokens to cluster (the others are ignored, whatever they hold).
        seed: seed of the k-means++ starts.
        n_init: number of starts (the lowest-inertia one is kept).
        max_iter: Lloyd iterations per start (fixed: no host synchronisation).
        dtype: compute dtype, float32 (default) or float64.

    Returns:
        ``(B, N)`` long on ``features``' device: cluster 0 or 1 per kept token, -1 elsewhere.
    """
    if features.dim() != 3 or valid.shape != features.shape[:2]:
        raise ValueError(
            f"two_means: features must be (B, N, D) and valid (B, N), got "
            f"{tuple(features.shape)} and {tuple(valid.shape)}."
        )
    valid = valid.to(features.device).bool()
    with torch.no_grad(), torch.autocast(features.device.type, enabled=False):
        gram = _centred_grams([features], valid, dtype)
        labels, _ = _two_means_gram(gram, valid, seed, n_init, max_iter)
    return torch.where(valid, labels[:, 0], -1)


def _torch_nmi(
    hidden_states: Sequence[Tensor],
    modality: Tensor,
    seed: int,
    n_init: int,
    max_iter: int,
    dtype: torch.dtype,
) -> Tensor:
    """``(B, S)`` float64 on the features' device; no host synchronisation."""
    if n_init < 1 or max_iter < 0:
        raise ValueError(f"modality_nmi: n_init must be >= 1 and max_iter >= 0, got {n_init}, "
                         f"{max_iter}.")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"modality_nmi: dtype must be torch.float32 or float64, got {dtype}.")
    device = hidden_states[0].device
    mod = modality.to(device)
    valid = mod >= 0
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        gram = _centred_grams(hidden_states, valid, dtype)
        labels, _ = _two_means_gram(gram, valid, seed, n_init, max_iter)
        return binary_nmi((mod == 1)[:, None, :], labels, valid[:, None, :])


def _sklearn_nmi(hidden_states: Sequence[Tensor], modality: Tensor, seed: int) -> Tensor:
    """``(B, S)`` float64 on the CPU: scikit-learn's ``KMeans`` (n_init=10) per sample."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    mod = modality.detach().cpu().long()
    valid = mod >= 0
    out = torch.empty(mod.shape[0], len(hidden_states), dtype=torch.float64)
    for b in range(mod.shape[0]):
        keep = valid[b]
        labels = mod[b, keep].numpy()
        for s, h in enumerate(hidden_states):
            feats: np.ndarray = h[b].detach().to(device="cpu", dtype=torch.float64)[keep].numpy()
            clusters = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(feats)
            out[b, s] = float(normalized_mutual_info_score(labels, clusters))
    return out


def modality_nmi_per_sample(
    hidden_states: Sequence[Tensor],
    modality: Tensor,
    seed: int = 0,
    backend: Backend = "torch",
    *,
    n_init: int = 10,
    max_iter: int = 30,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Per-sample modality NMI for every hidden state.

    Args:
        hidden_states: ``S`` tensors ``(B, N, D)`` (embeddings first, then each layer's output;
            ``S = L + 1`` for ``FusionOutput.hidden_states``).
        modality: ``(B, N)`` ints: 1 vision, 0 language, -1 excluded (padding).
        seed: seed of the k-means starts (``random_state`` for the sklearn backend).
        backend: ``"torch"`` (batched on the features' device, default) or ``"sklearn"``
            (``KMeans(n_init=10)`` per sample on the CPU); see the module docstring.
        n_init, max_iter, dtype: starts, Lloyd iterations and compute dtype of the torch
            backend (the sklearn backend uses scikit-learn's own settings).

    Returns:
        ``(B, S)`` float64 on the CPU.
    """
    where = "modality_nmi"
    _check_shapes(hidden_states, modality, where)
    _check_values(modality, where)
    if backend == "torch":
        return _torch_nmi(hidden_states, modality, seed, n_init, max_iter, dtype).cpu()
    if backend == "sklearn":
        return _sklearn_nmi(hidden_states, modality, seed)
    raise ValueError(f"{where}: backend must be 'torch' or 'sklearn', got {backend!r}.")


def modality_nmi(
    hidden_states: Sequence[Tensor],
    modality: Tensor,
    seed: int = 0,
    backend: Backend = "torch",
    **kwargs,
) -> Tensor:
    """Modality NMI per hidden state, averaged over the samples of one batch.

    Args:
        hidden_states: ``L + 1`` tensors ``(B, N, D)``, the embeddings first.
        modality: ``(B, N)`` ints: 1 vision, 0 language, -1 excluded (padding).
        seed: seed of the k-means starts.
        backend: ``"torch"`` (default) or ``"sklearn"``; ``kwargs`` (``n_init``, ``max_iter``,
            ``dtype``) go to :func:`modality_nmi_per_sample`.

    Returns:
        ``(L + 1,)`` float64: entry 0 for the embeddings, entry ``l`` for layer ``l``'s output.
    """
    return modality_nmi_per_sample(hidden_states, modality, seed, backend, **kwargs).mean(dim=0)


class NMIAccumulator:
    """Running mean of per-sample modality NMI over many batches.

    With the torch backend everything stays on the features' device and ``update`` never waits
    for it: invalid modality labels are counted there and reported by :meth:`compute`.

    Args:
        num_states: number of hidden states each update must provide (``L + 1``).
        seed: seed of the k-means starts.
        backend: ``"torch"`` (default) or ``"sklearn"``, see :func:`modality_nmi_per_sample`.
        n_init, max_iter, dtype: settings of the torch backend.
    """

    def __init__(
        self,
        num_states: int,
        seed: int = 0,
        backend: Backend = "torch",
        n_init: int = 10,
        max_iter: int = 30,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if num_states < 1:
            raise ValueError(f"NMIAccumulator: num_states must be >= 1, got {num_states}.")
        if backend not in ("torch", "sklearn"):
            raise ValueError(f"NMIAccumulator: backend must be 'torch' or 'sklearn', got "
                             f"{backend!r}.")
        self.num_states = num_states
        self.seed = seed
        self.backend = backend
        self.n_init, self.max_iter, self.dtype = n_init, max_iter, dtype
        self._mean = SampleMean((num_states,), "NMIAccumulator", _INVALID_HINT)

    @property
    def num_samples(self) -> int:
        """Number of samples seen so far."""
        return self._mean.num_samples

    def reset(self) -> None:
        """Forget every sample seen."""
        self._mean.reset()

    def update(self, hidden_states: Sequence[Tensor], modality: Tensor) -> None:
        """Add one batch: ``num_states`` tensors ``(B, N, D)`` and ``(B, N)`` labels."""
        if len(hidden_states) != self.num_states:
            raise ValueError(
                f"NMIAccumulator.update: expected {self.num_states} hidden states, got "
                f"{len(hidden_states)} (embeddings plus one per layer)."
            )
        _check_shapes(hidden_states, modality, "NMIAccumulator.update")
        if self.backend == "sklearn":
            _check_values(modality, "NMIAccumulator.update")
            self._mean.add(_sklearn_nmi(hidden_states, modality, self.seed))
            return
        mod = modality.to(hidden_states[0].device)
        scores = _torch_nmi(hidden_states, mod, self.seed, self.n_init, self.max_iter, self.dtype)
        self._mean.add(scores, invalid=_invalid_samples(mod))

    def compute(self) -> Tensor:
        """``(num_states,)`` float64 mean NMI over all samples seen, on the CPU."""
        return self._mean.compute()
