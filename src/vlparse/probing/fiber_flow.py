"""Inter-modality flow of fusion in the backbone (FIBER), the generalisation of the IMF.

A fused FIBER pair adds, inside each stream, a gated cross-attention output to the
self-attention output: in the image block ``x + (s + alpha_i2t * cross(s, text))``, in the text
layer ``s + alpha_t2i * cross(s, image)`` before the residual and LayerNorm. For token ``i`` of a
stream, ``s_i`` is what the stream's own attention adds (after its output projection) and
``c_i = alpha * cross(s, other)_i`` what the other modality adds. The token's flow is the share
of the attention update that comes from the other modality::

    phi_i = ||c_i|| / (||c_i|| + ||s_i||)        (0 when both are 0)

and the flow of a pair and direction is the mean over samples of the mean of ``phi_i`` over the
sample's real tokens (the image tokens of the block; the non-padded text tokens). It lies in
``[0, 1)``, is exactly 0 when the pair's gate is 0, and grows with ``|alpha|``.

It reduces to a share of attention across modalities: apply the same split to one
single-stream attention layer, ``o_i = sum_j W_ij u_j`` (rows of ``W`` sum to 1, ``u_j`` the
projected values), with ``s_i`` the sum over keys of the token's modality and ``c_i`` over the
other's. When the ``u_j`` are equal, ``phi_i = sum_{j other} W_ij``, the token's attention mass
on the other modality, and its mean over tokens is ``2 F^{l,l}``, twice the paper's
inter-modality flow within the layer (the IMF mixes in the residual, ``A = (I + W) / 2``). In
FIBER each attention puts all its mass on one modality, so ``phi_i`` weighs the two masses by
the size of what each adds.

Direction names follow the model's modules: ``i2t`` is the cross-attention in the image blocks
(image tokens attend to text: the flow *into the image stream*), ``t2i`` the one in the text
layers (the flow *into the text stream*). The values come from forward hooks on the model's
:class:`~vlparse.models.fiber.cross_attention.GatedCrossAttention` modules during its own
fused forward: nothing of the model is copied or changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from vlparse.probing._mean import SampleMean

__all__ = ["DIRECTIONS", "FiberFlowAccumulator", "fiber_flow_per_sample", "update_share"]

DIRECTIONS = ("i2t", "t2i")
"""The columns of every ``(..., F, 2)`` result: image blocks attending to text, text layers
attending to the image."""


def update_share(self_out: Tensor, cross_out: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-sample mean of ``||c|| / (||c|| + ||s||)`` over the real tokens.

    Args:
        self_out: ``(B, N, D)`` what the stream's own attention adds, ``s``.
        cross_out: ``(B, N, D)`` what the other modality adds, ``c`` (gate included).
        mask: ``(B, N)``, nonzero for the tokens to average over (``None``: all); each sample
            needs one.

    Returns:
        ``(B,)`` float32 shares in ``[0, 1]``; a token with ``s = c = 0`` counts 0.
    """
    if self_out.shape != cross_out.shape or self_out.dim() != 3:
        raise ValueError(f"update_share: self and cross outputs must both be (B, N, D), got "
                         f"{tuple(self_out.shape)} and {tuple(cross_out.shape)}")
    with torch.autocast(self_out.device.type, enabled=False):
        c = cross_out.detach().float().norm(dim=-1)
        s = self_out.detach().float().norm(dim=-1)
        den = c + s
        phi = torch.where(den > 0, c / den.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
        if mask is None:
            return phi.mean(dim=1)
        keep = mask.to(device=phi.device, dtype=phi.dtype)
        if keep.shape != phi.shape:
            raise ValueError(f"update_share: mask must be (B, N) = {tuple(phi.shape)}, got "
                             f"{tuple(mask.shape)}")
        return (phi * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)


@contextmanager
def _capture(model: nn.Module, text_mask: Tensor, found: dict[tuple[int, int], Tensor]
             ) -> Iterator[None]:
    """Forward hooks on every fused pair's two cross-attentions; each call stores its stream's
    per-sample :func:`update_share` under ``(pair, direction)``."""
    handles = []

    def hook_of(pair: int, direction: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: tuple) -> None:
            self_out, cross_out = (args[0] if args else kwargs["x"]), output[0]
            mask = text_mask if direction == 1 else None  # the text queries' padding
            found[(pair, direction)] = update_share(self_out, cross_out, mask)
        return hook

    try:
        for k, (i2t, t2i) in enumerate(zip(model.i2t, model.t2i, strict=True)):
            handles.append(i2t.register_forward_hook(hook_of(k, 0), with_kwargs=True))
            handles.append(t2i.register_forward_hook(hook_of(k, 1), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def fiber_flow_per_sample(model: nn.Module, images: Tensor, input_ids: Tensor,
                          attention_mask: Tensor) -> Tensor:
    """The flow of every fused pair and direction, per sample, from one fused forward.

    Args:
        model: a :class:`~vlparse.models.fiber.FiberModel` (call ``model.eval()`` first, or
            dropout perturbs the outputs).
        images: ``(B, 3, S, S)``; input_ids, attention_mask: ``(B, L)`` whole sequences with
            their special tokens (as the model's processor makes them).

    Returns:
        ``(B, F, 2)`` float32 on the model's device: ``[b, k, 0]`` the flow into the image
        stream at pair ``k`` (``i2t``), ``[b, k, 1]`` into the text stream (``t2i``).
    """
    found: dict[tuple[int, int], Tensor] = {}
    with _capture(model, attention_mask, found):
        model(images, input_ids, attention_mask, fusion=True)
    pairs = len(model.pairs)
    if len(found) != 2 * pairs:
        raise RuntimeError(f"fiber_flow: {len(found)} of the {2 * pairs} cross-attentions ran; "
                           "the model's fused forward did not call them all")
    return torch.stack([torch.stack([found[(k, 0)], found[(k, 1)]], dim=-1)
                        for k in range(pairs)], dim=1)


class FiberFlowAccumulator:
    """Mean of :func:`fiber_flow_per_sample` over many batches, kept on the device.

    Args:
        num_pairs: ``F``, the model's fused pairs.
    """

    def __init__(self, num_pairs: int) -> None:
        self.num_pairs = num_pairs
        self._mean = SampleMean((num_pairs, 2), "FiberFlowAccumulator")

    @property
    def num_samples(self) -> int:
        return self._mean.num_samples

    def update(self, model: nn.Module, images: Tensor, input_ids: Tensor,
               attention_mask: Tensor) -> None:
        """Run the fused forward on one batch and add its per-sample flows."""
        flows = fiber_flow_per_sample(model, images, input_ids, attention_mask)
        if flows.shape[1] != self.num_pairs:
            raise ValueError(f"FiberFlowAccumulator: {flows.shape[1]} fused pairs, built for "
                             f"{self.num_pairs}")
        self._mean.add(flows)

    def compute(self) -> Tensor:
        """``(F, 2)`` float64 on the CPU: the mean flow of each pair (``i2t``, ``t2i``)."""
        return self._mean.compute()
