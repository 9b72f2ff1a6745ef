"""A linear patch projection embedder (ViLT-style): no backbone, one linear map per patch.

The image is cut into non-overlapping ``p x p`` patches (``p = cfg.patch_size``, 32 as in
ViLT-B/32) and each flattened ``3 p^2`` patch is mapped linearly to ``out_dim`` channels. The map
is a ``Conv2d`` with ``kernel_size = stride = p``, which is exactly a shared ``Linear`` over the
flattened patches. ViLT projects straight to its Transformer width (768); here ``out_dim`` is
``cfg.embed_dim`` when set and 768 otherwise (the multi-modal model then maps ``c -> D`` in
:class:`~vlparse.models.embeddings.VisualEmbedding`, so any width works). At 384 px and
``p = 32`` there are 12 x 12 = 144 tokens; at 224 px 7 x 7 = 49.

There is no self-attention, so ``has_attention`` is ``False`` and ``output_attentions=True``
returns ``attention=None``; attention-guided MFR is unavailable (random MFR works).
"""

from __future__ import annotations

from torch import Tensor, nn

from vlparse.config import VisualConfig
from vlparse.models.outputs import VisualOutput
from vlparse.models.visual.base import GridEmbedder
from vlparse.models.weights import (
    LoadReport,
    existing_checkpoint,
    load_state_dict_report,
    read_state_dict,
    timm_pretrained_state,
)

__all__ = ["PatchProjection", "DEFAULT_PATCH_DIM", "DEFAULT_PATCH_SIZE"]

DEFAULT_PATCH_DIM = 768  # ViLT's (and ViT-B's) width
DEFAULT_PATCH_SIZE = 32  # ViLT-B/32


class PatchProjection(GridEmbedder):
    """Linear projection of pixel patches.

    Args:
        cfg: the visual config; ``patch_size`` is ``p`` (``image_size`` must be divisible by it),
            ``embed_dim`` the output width ``c`` (default 768). ``arch`` only matters for
            ``load_pretrained('timm')``. No weights are read here.

    Attributes:
        model: the ``Conv2d(3, c, kernel_size=p, stride=p)`` projection (named ``model`` like
            the timm model of the other embedders, so load reports share the ``visual.model.``
            prefix).
    """

    def __init__(self, cfg: VisualConfig) -> None:
        super().__init__()
        p = cfg.patch_size if cfg.patch_size is not None else DEFAULT_PATCH_SIZE
        if p <= 0 or cfg.image_size % p != 0:
            raise ValueError(
                f"model.visual: kind=patch needs image_size divisible by patch_size, got "
                f"image_size={cfg.image_size}, patch_size={p}; set model.visual.image_size to a "
                f"multiple of {p} (e.g. {max(p, round(cfg.image_size / max(p, 1)) * p)})"
            )
        dim = cfg.embed_dim if cfg.embed_dim is not None else DEFAULT_PATCH_DIM
        if dim <= 0:
            raise ValueError(f"model.visual.embed_dim must be positive for kind=patch, got {dim}")
        self.cfg = cfg
        self.model = nn.Conv2d(3, dim, kernel_size=p, stride=p)
        side = cfg.image_size // p
        self._grid = (side, side)

    @property
    def out_dim(self) -> int:
        """``c``, the projection width."""
        return int(self.model.out_channels)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """No-op: a single linear layer has nothing worth checkpointing."""

    def forward(self, images: Tensor, output_attentions: bool = False) -> VisualOutput:
        """Project patches.

        Args:
            images: ``(B, 3, H, W)`` normalised images, ``H = W = cfg.image_size``.
            output_attentions: accepted for interface compatibility; ``attention`` is ``None``.

        Returns:
            :class:`VisualOutput` with ``tokens (B, m, c)`` row-major over ``grid_size``.
        """
        self._check_images(images)
        tokens = self.model(images).flatten(2).transpose(1, 2)  # (B, m, c)
        return VisualOutput(tokens=tokens, grid_size=self.grid_size, attention=None)

    def load_pretrained(self, source: str) -> LoadReport:
        """Load a patch projection and report what matched.

        Args:
            source: ``"timm"`` takes ``patch_embed.proj`` of timm's pretrained ViT named by
                ``cfg.arch`` (e.g. ``vit_base_patch32_224``, ViLT's initialisation; from the local
                cache), or a local checkpoint holding ``*patch_embed.proj.{weight,bias}`` (a ViT or
                ViLT checkpoint) or bare ``weight`` / ``bias`` / ``model.*`` keys.
        """
        if source == "timm":
            hint = (
                "For kind=patch set model.visual.arch to a timm ViT with the same patch size "
                "(e.g. vit_base_patch32_224) whose weights are in the cache, or pass a file"
            )
            state = timm_pretrained_state(self.cfg.arch, hint, num_classes=0)
            where = f"timm {self.cfg.arch}"
        else:
            path = existing_checkpoint(source)
            state, where = read_state_dict(path), str(path)
        picked: dict[str, Tensor] = {}
        used: list[str] = []
        for name in ("weight", "bias"):
            keys = [k for k in state if k.endswith(f"patch_embed.proj.{name}")]
            keys = keys or [k for k in (name, f"model.{name}") if k in state]
            if keys:
                picked[name] = state[keys[0]]
                used.append(keys[0])
        if not picked:
            raise ValueError(
                f"model.visual.pretrained: {where} has no patch projection "
                "(no '*patch_embed.proj.weight' or 'weight' key)"
            )
        want = tuple(self.model.weight.shape)
        if "weight" in picked and tuple(picked["weight"].shape) != want:
            raise ValueError(
                f"model.visual.pretrained: {where} has a patch projection of shape "
                f"{tuple(picked['weight'].shape)}, the model {want} (out_dim, 3, p, p); set "
                "model.visual.embed_dim and patch_size to the checkpoint's"
            )
        report = load_state_dict_report(self.model, picked)
        report.unexpected = [k for k in state if k not in used]
        report.notes.append(f"patch projection from {where} ({', '.join(used)})")
        return report
