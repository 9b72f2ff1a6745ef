"""Visual embedders: modules mapping images ``(B, 3, H, W)`` to tokens ``(B, m, c)``.

Every embedder has ``forward(images, output_attentions=False) -> VisualOutput``, the properties
``num_tokens``, ``out_dim``, ``grid_size`` and ``has_attention``, ``set_grad_checkpointing`` and
``load_pretrained(source) -> LoadReport``. ``model.visual.kind`` picks one:

- ``swin``: :class:`SwinParser`, the paper's self-attention visual parser (has attention);
- ``resnet``: :class:`ResNetGrid`, a timm ResNet's last feature map as a grid (SOHO-style);
- ``patch``: :class:`PatchProjection`, a linear projection of pixel patches (ViLT-style).
"""

from __future__ import annotations

from torch import nn

from vlparse.config import ConfigError, VisualConfig
from vlparse.models.visual.patch_projection import PatchProjection
from vlparse.models.visual.resnet_grid import ResNetGrid
from vlparse.models.visual.swin_parser import SwinParser

__all__ = [
    "SwinParser",
    "ResNetGrid",
    "PatchProjection",
    "EMBEDDERS",
    "build_visual_embedder",
    "require_attention",
]

EMBEDDERS: dict[str, type[nn.Module]] = {
    "swin": SwinParser,
    "resnet": ResNetGrid,
    "patch": PatchProjection,
}


def _embedder_class(kind: str) -> type[nn.Module]:
    try:
        return EMBEDDERS[kind]
    except KeyError:
        raise ValueError(
            f"model.visual.kind: unknown embedder '{kind}'; known: {', '.join(EMBEDDERS)}"
        ) from None


def build_visual_embedder(cfg: VisualConfig) -> nn.Module:
    """Build the visual embedder named by ``cfg.kind`` (randomly initialised, no I/O)."""
    return _embedder_class(cfg.kind)(cfg)


def require_attention(cfg: VisualConfig, mfr_mode: str) -> None:
    """Fail at start when attention-guided MFR is asked of an embedder without attention.

    Args:
        cfg: the visual config (``cfg.kind`` names the embedder).
        mfr_mode: ``objectives.mfr_mode`` (``"attention"``, ``"random"`` or ``"off"``).

    Raises:
        ConfigError: ``mfr_mode == "attention"`` and the embedder has no attention.
    """
    if mfr_mode != "attention":
        return
    if not getattr(_embedder_class(cfg.kind), "has_attention", False):
        raise ConfigError(
            "objectives.mfr_mode=attention needs a visual embedder with attention "
            "(model.visual.kind=swin); use mfr_mode=random or off "
            f"(model.visual.kind={cfg.kind} has no attention)"
        )
