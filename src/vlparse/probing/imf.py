"""Inter-Modality Flow (IMF), paper section 3.2, eqs. 2-6.

For a stack of ``L`` attention layers, each layer's head-averaged attention ``W^l`` is mixed
with the residual stream, ``A^l = 0.5 (I + W^l)`` (eq. 3), and the flow from layer ``i``'s
input to layer ``j``'s output is the rollout ``A^{i,j} = A^j A^{j-1} ... A^i`` (eq. 4; later
layers on the left, rows = queries). The Inter-Modality Flow is the share of that rollout's
mass that links tokens of different modalities (eqs. 5-6)::

    F^{i,j} = sum_{x, y of different modality} A^{i,j}[x, y] / sum_{x, y} A^{i,j}[x, y]

where ``x`` and ``y`` range over the non-excluded tokens of a sample, and the reported value is
the mean of the per-sample ratios.

Labelling of ``[CLS]`` and ``[SEP]``: this module never guesses which token is which; callers
pass a ``modality`` tensor, ``(B, N)`` ints, ``1`` vision, ``0`` language, ``-1`` excluded
(padding). vlparse's :attr:`vlparse.models.outputs.FusionOutput.modality` labels ``[CLS]`` and
``[SEP]`` as language (``0``), as in a BERT-style text stream. Use :func:`relabel_special` to
count them as vision, or to exclude them (``-1``) from the endpoints ``x, y`` of the sums.

Excluded tokens are left out as *endpoints* only: paths that pass through them still count. For
padding this changes nothing, because real models give padded keys zero attention, so no path
from a real token can enter a padded one (the padded query rows may hold anything).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vlparse.probing._mean import SampleMean

__all__ = [
    "IMFAccumulator",
    "inter_modality_flow",
    "inter_modality_flow_per_sample",
    "relabel_special",
]


def _invalid_samples(modality: Tensor) -> Tensor:
    """``(B,)`` bool on ``modality``'s device: labels other than 1, 0, -1, or none kept."""
    bad = ~((modality == 1) | (modality == 0) | (modality == -1))
    return bad.any(dim=1) | ((modality >= 0).sum(dim=1) == 0)


def _check_modality(
    modality: Tensor, batch: int, tokens: int, where: str, values: bool = True
) -> None:
    """Shape and dtype checks; with ``values`` also the labels (synchronises the device)."""
    if modality.dim() != 2 or tuple(modality.shape) != (batch, tokens):
        raise ValueError(
            f"{where}: modality must have shape (B, N) = ({batch}, {tokens}) to match the "
            f"attentions, got {tuple(modality.shape)}; build it with FusionOutput.modality."
        )
    if modality.is_floating_point() or modality.is_complex():
        raise ValueError(f"{where}: modality must hold integers (1, 0, -1), got {modality.dtype}.")
    if not values:
        return
    bad = ~((modality == 1) | (modality == 0) | (modality == -1))
    if bool(bad.any()):
        raise ValueError(
            f"{where}: modality may only hold 1 (vision), 0 (language) or -1 (excluded), "
            f"found {sorted(set(modality[bad].tolist()))}."
        )
    empty = (modality >= 0).sum(dim=1) == 0
    if bool(empty.any()):
        idx = torch.nonzero(empty).flatten().tolist()
        raise ValueError(
            f"{where}: samples {idx} have no non-excluded token (all modality -1); drop them."
        )


def _mixing_matrices(
    attentions: Sequence[Tensor], dtype: torch.dtype, where: str
) -> tuple[list[Tensor], int, int]:
    """Head-averaged, residual-mixed ``A^l = 0.5 (I + W^l)``, each ``(B, N, N)``."""
    if len(attentions) == 0:
        raise ValueError(f"{where}: got no attention tensors; pass one (B, H, N, N) per layer.")
    first = attentions[0]
    if first.dim() != 4 or first.shape[-1] != first.shape[-2]:
        raise ValueError(
            f"{where}: each attention must be (B, H, N, N), layer 0 has shape {tuple(first.shape)}."
        )
    batch, _, tokens, _ = first.shape
    eye = torch.eye(tokens, dtype=dtype, device=first.device)
    mixes = []
    for layer, att in enumerate(attentions):
        if att.dim() != 4 or att.shape[0] != batch or att.shape[-2:] != (tokens, tokens):
            raise ValueError(
                f"{where}: layer {layer} attention has shape {tuple(att.shape)}, expected "
                f"({batch}, H, {tokens}, {tokens}) like layer 0."
            )
        w = att.detach().to(device=first.device, dtype=dtype).mean(dim=1)
        mixes.append(0.5 * (eye + w))
    return mixes, batch, tokens


def inter_modality_flow_per_sample(
    attentions: Sequence[Tensor], modality: Tensor, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Per-sample Inter-Modality Flow for every layer pair.

    Args:
        attentions: ``L`` tensors ``(B, H, N, N)`` (row = query, rows sum to 1), in layer order.
        modality: ``(B, N)`` ints: 1 vision, 0 language, -1 excluded.
        dtype: compute dtype, ``torch.float32`` or ``torch.float64``.

    Returns:
        ``(B, L, L)`` on the attentions' device: ``[b, i, j]`` is sample ``b``'s
        ``F^{i+1, j+1}`` for ``i <= j``; entries with ``i > j`` are NaN.

    All ``L (L + 1) / 2`` rollouts are built with one batched matmul each: for every start
    layer ``i`` the product is extended forward over ``j``.
    """
    return _flows(attentions, modality, dtype, "inter_modality_flow", check_values=True)


@torch.no_grad()
def _flows(
    attentions: Sequence[Tensor],
    modality: Tensor,
    dtype: torch.dtype,
    where: str,
    check_values: bool,
) -> Tensor:
    """:func:`inter_modality_flow_per_sample`; without ``check_values`` it never waits for the
    device (samples with bad labels then give NaN or meaningless flows)."""
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{where}: dtype must be torch.float32 or torch.float64, got {dtype}.")
    device = attentions[0].device if len(attentions) else modality.device
    with torch.autocast(device.type, enabled=False):
        mixes, batch, tokens = _mixing_matrices(attentions, dtype, where)
        device = mixes[0].device
        modality = modality.to(device)
        _check_modality(modality, batch, tokens, where, values=check_values)

        valid = modality >= 0  # (B, N)
        pair = valid[:, :, None] & valid[:, None, :]  # (B, N, N)
        cross = pair & (modality[:, :, None] != modality[:, None, :])
        pair_w = pair.to(dtype)
        cross_w = cross.to(dtype)

        num_layers = len(mixes)
        out = torch.full((batch, num_layers, num_layers), float("nan"), dtype=dtype, device=device)
        for i in range(num_layers):
            rollout = mixes[i]
            for j in range(i, num_layers):
                if j > i:
                    rollout = torch.bmm(mixes[j], rollout)
                inter = (rollout * cross_w).sum(dim=(1, 2))
                total = (rollout * pair_w).sum(dim=(1, 2))
                out[:, i, j] = inter / total
        return out


def inter_modality_flow(
    attentions: Sequence[Tensor], modality: Tensor, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Inter-Modality Flow ``F^{i,j}`` averaged over the samples of one batch.

    Args:
        attentions: ``L`` tensors ``(B, H, N, N)`` (row = query), one per layer, in order.
        modality: ``(B, N)`` ints: 1 vision, 0 language, -1 excluded (padding).
        dtype: compute dtype, ``torch.float32`` (default) or ``torch.float64``.

    Returns:
        ``(L, L)``: entry ``[i, j]`` (0-based, ``i <= j``) is the paper's ``F^{i+1, j+1}``;
        entries with ``i > j`` are NaN. ``diag`` gives the per-layer flows ``F^{i,i}`` and row 0
        the flows from the input, ``F^{1,j}``.
    """
    return inter_modality_flow_per_sample(attentions, modality, dtype).mean(dim=0)


def relabel_special(
    modality: Tensor, positions: int | Sequence[int] | Tensor, label: int
) -> Tensor:
    """Return a copy of ``modality`` with the tokens at ``positions`` given ``label``.

    Args:
        modality: ``(B, N)`` ints, as from ``FusionOutput.modality``.
        positions: column index or indices (e.g. ``0`` for ``[CLS]``, ``1 + m`` for ``[SEP]``);
            negative indices count from the end.
        label: ``1`` (vision), ``0`` (language) or ``-1`` (exclude from the sums).

    Returns:
        ``(B, N)`` new tensor. Tokens already excluded (padding, ``-1``) stay excluded.
    """
    if label not in (-1, 0, 1):
        raise ValueError(f"relabel_special: label must be 1, 0 or -1, got {label!r}.")
    if modality.dim() != 2:
        raise ValueError(
            f"relabel_special: modality must be (B, N), got shape {tuple(modality.shape)}."
        )
    idx = torch.as_tensor(positions, dtype=torch.long, device=modality.device).reshape(-1)
    n = modality.shape[1]
    if bool(((idx >= n) | (idx < -n)).any()):
        raise ValueError(
            f"relabel_special: positions {idx.tolist()} out of range for N = {n} tokens."
        )
    out = modality.clone()
    cols = out[:, idx]
    out[:, idx] = torch.where(cols >= 0, torch.full_like(cols, label), cols)
    return out


class IMFAccumulator:
    """Running mean of per-sample Inter-Modality Flows over many batches.

    Keeps only a ``(L, L)`` float64 sum (on the attentions' device) and a sample count, never
    the attentions. ``update`` never waits for the device: invalid modality labels are counted
    there and reported by :meth:`compute`, which reads the sum back once.

    Args:
        num_layers: number of attention layers ``L`` each update must provide.
        dtype: compute dtype of each batch's rollout (float32 or float64).
    """

    def __init__(self, num_layers: int, dtype: torch.dtype = torch.float32) -> None:
        if num_layers < 1:
            raise ValueError(f"IMFAccumulator: num_layers must be >= 1, got {num_layers}.")
        self.num_layers = num_layers
        self.dtype = dtype
        self._mean = SampleMean(
            (num_layers, num_layers),
            "IMFAccumulator",
            "had modality labels other than 1, 0, -1 or no non-excluded token; check the "
            "batches with inter_modality_flow_per_sample, which says what was wrong",
        )

    @property
    def num_samples(self) -> int:
        """Number of samples seen so far."""
        return self._mean.num_samples

    def reset(self) -> None:
        """Forget every sample seen."""
        self._mean.reset()

    @torch.no_grad()
    def update(self, attentions: Sequence[Tensor], modality: Tensor) -> None:
        """Add one batch: ``L`` tensors ``(B, H, N, N)`` and its ``(B, N)`` modality labels."""
        if len(attentions) != self.num_layers:
            raise ValueError(
                f"IMFAccumulator.update: expected {self.num_layers} attention tensors, got "
                f"{len(attentions)}; the model and the accumulator disagree on depth."
            )
        flows = _flows(attentions, modality, self.dtype, "IMFAccumulator.update", False)
        self._mean.add(flows, invalid=_invalid_samples(modality.to(flows.device)))

    def compute(self) -> Tensor:
        """``(L, L)`` float64 mean flow over all samples seen; NaN below the diagonal."""
        return self._mean.compute()
