"""FLOPs, MACs and parameter counts of modules and visual embedders.

Counting uses :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the matrix
multiplications and convolutions (``mm``, ``bmm``, ``addmm``, ``convolution``, scaled dot-product
attention, ...) from their shapes and ignores element-wise work (norms, activations, pooling,
additions). It counts one multiply-add as **2 FLOPs**, so ``MACs = FLOPs / 2``.

Papers usually print MACs under the name "FLOPs": the 4.1 G of ResNet-50 and the 4.5 G of Swin-T
at 224 px in the Visual Parsing paper's Table 5 (and in the Swin and ResNet papers) are
multiply-adds. Compare those numbers with ``gmacs`` here, not ``gflops``.

Visual embedders are measured on the ``meta`` device (shapes only: no memory, no arithmetic),
falling back to the CPU if an operator has no meta implementation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from vlparse.config import ModelConfig, PretrainConfig, VisualConfig
from vlparse.models.visual.patch_projection import DEFAULT_PATCH_SIZE

__all__ = ["count_flops", "describe_visual", "format_model_info"]


def count_flops(
    module: nn.Module, inputs: Tensor | tuple[Any, ...], **kwargs: Any
) -> dict[str, Any]:
    """Count the FLOPs and MACs of one forward call, and the module's parameters.

    The module runs once in eval mode under ``torch.no_grad`` (its training flag is restored).

    Args:
        module: any ``nn.Module``.
        inputs: the positional input(s) of ``module.forward``, e.g. images ``(B, 3, H, W)``;
            counts are for the whole batch.
        **kwargs: keyword arguments of ``module.forward``.

    Returns:
        ``{"flops": int, "macs": int, "params": int, "by_op": {op name: FLOPs}}`` where
        ``flops`` counts a multiply-add as 2 (FlopCounterMode's convention) and
        ``macs = flops // 2``; ``params`` counts all parameters of ``module``.
    """
    args = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    was_training = module.training
    module.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            module(*args, **kwargs)
    finally:
        module.train(was_training)
    flops = int(counter.get_total_flops())
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    params = sum(p.numel() for p in module.parameters())
    return {"flops": flops, "macs": flops // 2, "params": int(params), "by_op": by_op}


def _measure(cfg: VisualConfig, device: str) -> tuple[nn.Module, dict[str, Any]]:
    from vlparse.models.visual import build_visual_embedder

    with torch.device(device):
        embedder = build_visual_embedder(cfg)
    images = torch.zeros(1, 3, cfg.image_size, cfg.image_size, device=device)
    return embedder, count_flops(embedder, images)


def describe_visual(cfg: VisualConfig) -> dict[str, Any]:
    """Size and cost of the visual embedder of ``cfg`` for one ``image_size`` image.

    The embedder is built without weights (``pretrained`` is not read).

    Returns:
        a dict with ``kind``, ``arch`` (``None`` for ``patch``), ``patch_size`` (``patch`` only),
        ``image_size``, ``tokens`` (``m``), ``grid_size``, ``out_dim`` (``c``),
        ``has_attention``, ``params`` and ``params_m`` (millions, headless: no classifier),
        ``macs``, ``flops``, ``gmacs`` and ``gflops`` (``1e9``; ``flops = 2 * macs``).
    """
    try:
        embedder, counts = _measure(cfg, "meta")
    except (NotImplementedError, RuntimeError):
        embedder, counts = _measure(cfg, "cpu")
    return {
        "kind": cfg.kind,
        "arch": None if cfg.kind == "patch" else cfg.arch,
        "patch_size": (cfg.patch_size or DEFAULT_PATCH_SIZE) if cfg.kind == "patch" else None,
        "image_size": cfg.image_size,
        "tokens": int(embedder.num_tokens),
        "grid_size": tuple(embedder.grid_size),
        "out_dim": int(embedder.out_dim),
        "has_attention": bool(embedder.has_attention),
        "params": counts["params"],
        "params_m": counts["params"] / 1e6,
        "macs": counts["macs"],
        "flops": counts["flops"],
        "gmacs": counts["macs"] / 1e9,
        "gflops": counts["flops"] / 1e9,
    }


def format_model_info(cfg: PretrainConfig | ModelConfig | VisualConfig) -> str:
    """Lines for ``vlparse info``: the visual embedder's tokens, width, parameters and cost.

    Args:
        cfg: a full config, a model config or a visual config.
    """
    if isinstance(cfg, PretrainConfig):
        cfg = cfg.model
    visual = cfg.visual if isinstance(cfg, ModelConfig) else cfg
    d = describe_visual(visual)
    name = f"patch {d['patch_size']}x{d['patch_size']}" if d["kind"] == "patch" else d["arch"]
    h, w = d["grid_size"]
    attention = "yes" if d["has_attention"] else "no (attention-guided MFR unavailable)"
    return "\n".join(
        [
            f"visual embedder: kind={d['kind']} ({name}) at {d['image_size']}x{d['image_size']} px",
            f"  tokens m = {d['tokens']} ({h} x {w}), width c = {d['out_dim']}, "
            f"attention: {attention}",
            f"  params {d['params_m']:.2f} M, {d['gmacs']:.3f} GMACs = {d['gflops']:.3f} GFLOPs "
            "per image (FLOPs = 2 x MACs; papers' 'FLOPs (G)', e.g. Table 5, are GMACs)",
        ]
    )
