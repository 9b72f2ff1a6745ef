"""A CNN grid embedder: a timm ResNet whose last stage's feature map becomes the visual tokens.

This is the SOHO-style "grid feature" baseline of the paper's ablation (Table 5, R50 / R101).
The adapter builds the timm model headless (``num_classes=0, global_pool=''``) rather than with
``features_only``: the parameter names then stay those of timm's classification checkpoints
(``conv1.weight``, ``layer4.2.bn3.bias``, ...), so pretrained weights load without renaming, and
``forward_features`` returns the last stage's ``(B, C, h, w)`` map directly. The map is
flattened row-major into ``(B, h * w, C)`` tokens; for ResNet-50/101 ``C = 2048`` and
``h = w = ceil(image_size / 32)`` (7 x 7 = 49 tokens at 224).

A CNN has no self-attention, so ``has_attention`` is ``False`` and ``output_attentions=True``
returns ``attention=None``; attention-guided MFR is unavailable (random MFR works).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from vlparse.config import VisualConfig
from vlparse.models.outputs import VisualOutput
from vlparse.models.visual.base import GridEmbedder, create_timm_model
from vlparse.models.weights import LoadReport, existing_checkpoint, read_state_dict

__all__ = ["ResNetGrid"]


def _timm_kwargs(cfg: VisualConfig) -> dict[str, Any]:
    return dict(num_classes=0, global_pool="", drop_path_rate=cfg.drop_path_rate)


class ResNetGrid(GridEmbedder):
    """ResNet grid-feature embedder.

    Args:
        cfg: the visual config; ``arch`` names a timm ResNet (``resnet50``, ``resnet101``,
            ``resnet18``, ``resnet26d``, ...), ``drop_path_rate`` is passed to timm.
            ``window_size``, ``embed_dim``, ``depths`` and ``num_heads`` are not used. No weights
            are read here: see :meth:`load_pretrained`.

    Attributes:
        model: the timm ``ResNet`` (headless: no pooling, no classifier). ``out_dim`` is the
            channels of its last stage (2048 for ResNet-50/101, 512 for ResNet-18).
    """

    def __init__(self, cfg: VisualConfig) -> None:
        super().__init__()
        from timm.models.resnet import ResNet

        self.cfg = cfg
        self.model = create_timm_model(
            cfg, _timm_kwargs(cfg), "for kind=resnet",
            "Set model.visual.arch to a timm ResNet such as resnet50 or resnet101.",
        )
        if not isinstance(self.model, ResNet):
            raise ValueError(
                f"model.visual.arch '{cfg.arch}' is a {type(self.model).__name__}, not a timm "
                "ResNet; with model.visual.kind=resnet use e.g. arch=resnet50 or resnet101"
            )
        self._reduction = int(self.model.feature_info[-1]["reduction"])
        side = math.ceil(cfg.image_size / self._reduction)
        self._grid = (side, side)

    # ------------------------------------------------------------------ forward

    def forward(self, images: Tensor, output_attentions: bool = False) -> VisualOutput:
        """Encode images.

        Args:
            images: ``(B, 3, H, W)`` normalised images, ``H = W = cfg.image_size``.
            output_attentions: accepted for interface compatibility; a CNN has no attention, so
                ``attention`` is always ``None``.

        Returns:
            :class:`VisualOutput` with ``tokens (B, m, c)`` (the last stage's map after its
            final ReLU, row-major over ``grid_size``) and ``attention=None``.
        """
        self._check_images(images)
        feats = self.model.forward_features(images)  # (B, c, h, w)
        if tuple(feats.shape[-2:]) != self._grid:
            raise RuntimeError(
                f"ResNetGrid: '{self.cfg.arch}' gave a {tuple(feats.shape[-2:])} feature map at "
                f"{self.cfg.image_size} px, expected {self._grid}; this ResNet variant "
                "downsamples differently"
            )
        tokens = feats.flatten(2).transpose(1, 2)  # (B, h*w, c)
        return VisualOutput(tokens=tokens, grid_size=self.grid_size, attention=None)

    # ------------------------------------------------------------------ weights

    def load_pretrained(self, source: str) -> LoadReport:
        """Load ResNet weights and report missing / unexpected keys.

        Args:
            source: ``"timm"`` for timm's pretrained weights of ``cfg.arch`` (from the local
                Hugging Face cache; offline there is no download), or a local ``.safetensors`` /
                ``.pth`` / ``.pt`` / ``.bin`` file with timm / torchvision ResNet names (a dict
                with ``model`` or ``state_dict`` is unwrapped). The classifier ``fc.*`` is
                ignored.
        """
        if source == "timm":
            hint = "Otherwise set model.visual.pretrained=/path/to/resnet.safetensors"
            return self._load_timm_pretrained(hint, **_timm_kwargs(self.cfg))
        path = existing_checkpoint(source)
        state = read_state_dict(path)
        dropped = [k for k in state if k.startswith("fc.")]
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        report = self._load_file_state(path, state)
        if dropped:
            report.notes.append(f"ignored the classifier ({', '.join(dropped)})")
        return report
