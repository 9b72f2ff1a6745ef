"""The image backbone: a timm Swin Transformer behind a thin adapter.

The adapter owns the timm model unchanged (``model``, so timm's weights load under timm's own key
names) and runs it in two ways:

- unimodal (:meth:`SwinTower.forward`): timm's ``forward_features`` itself;
- block by block (:meth:`embed`, :meth:`enter`, :meth:`block`, :meth:`fused_block`,
  :meth:`finish`), so that the fused model can interleave the image blocks with the text layers.

The seam of the fusion is ``SwinTransformerBlock._attn``: timm's method that runs the (shifted)
window self-attention on the normalised block input, output projection included, and returns it
merged back to the ``(B, H, W, C)`` grid. A fused block adds the gated image-to-text
cross-attention of that output to it before the residual, so the block computes
``x + drop_path(attn + gate * cross(attn, text))`` and then its MLP, calling the block's own
modules (``norm1``, ``_attn``, ``drop_path1``, ``norm2``, ``mlp``, ``drop_path2``). The
cross-attention reads each token's self-attention output on its own, so computing it on the merged
grid is the same as computing it inside each window with the text keys repeated per window (the
released code's way), whatever the window, the shift or the padding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vlparse.config.fiber import FiberVisualConfig
from vlparse.errors import ConfigError
from vlparse.models.fiber.cross_attention import GatedCrossAttention
from vlparse.models.weights import (
    LoadReport,
    existing_checkpoint,
    load_state_dict_report,
    read_state_dict,
    timm_pretrained_state,
)

__all__ = ["SwinTower"]


def timm_kwargs(cfg: FiberVisualConfig) -> dict[str, Any]:
    """Keyword arguments of ``timm.create_model`` for ``cfg`` (head-less)."""
    return dict(
        num_classes=0,
        img_size=cfg.image_size,
        window_size=cfg.window_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depths=tuple(cfg.depths),
        num_heads=tuple(cfg.num_heads),
        drop_path_rate=cfg.drop_path_rate,
    )


class SwinTower(nn.Module):
    """Swin image backbone.

    Args:
        cfg: the visual config. No weights are read here (see :meth:`load_pretrained`).

    Attributes:
        model: the timm ``SwinTransformer`` (``num_classes=0``).
    """

    def __init__(self, cfg: FiberVisualConfig) -> None:
        super().__init__()
        import timm

        self.cfg = cfg
        try:
            self.model = timm.create_model(cfg.arch, pretrained=False, **timm_kwargs(cfg))
        except (RuntimeError, ValueError, TypeError, AssertionError) as e:
            raise ConfigError(
                f"model.visual: timm cannot build '{cfg.arch}' with these settings ({e}); "
                "model.visual.arch must name a timm Swin Transformer"
            ) from e
        stages = getattr(self.model, "layers", None)
        if stages is None or not all(hasattr(s, "blocks") for s in stages):
            raise ConfigError(f"model.visual.arch '{cfg.arch}' is not a timm Swin Transformer")
        self.any_size = False
        if not all(hasattr(b, "_attn") for s in stages for b in s.blocks):
            raise RuntimeError(
                "the installed timm's SwinTransformerBlock has no _attn method, the seam the "
                "FIBER adapter uses; install timm 1.0.x"
            )

    # ------------------------------------------------------------------ shape

    @property
    def stages(self) -> nn.Sequential:
        """timm's stages (``SwinTransformerStage``: ``downsample`` then ``blocks``)."""
        return self.model.layers

    @property
    def depths(self) -> list[int]:
        return [len(s.blocks) for s in self.stages]

    @property
    def widths(self) -> list[int]:
        return [int(s.blocks[0].dim) for s in self.stages]

    @property
    def heads(self) -> list[int]:
        return [int(s.blocks[0].attn.num_heads) for s in self.stages]

    @property
    def out_dim(self) -> int:
        """``C`` of the last stage."""
        return self.widths[-1]

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(h, w)`` of the last stage's grid."""
        h, w = self.stages[-1].blocks[-1].input_resolution
        return int(h), int(w)

    @property
    def num_tokens(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def stride(self) -> int:
        """Input pixels per cell of the last stage's grid (``patch_size * 2**(stages - 1)``)."""
        return self.cfg.patch_size * 2 ** (len(self.depths) - 1)

    def allow_any_size(self) -> None:
        """Accept images of any height and width divisible by ``patch_size`` (the box tasks'
        variable sizes): timm's patch embedding stops requiring ``image_size`` and every block
        builds its shifted-window mask for the grid it is given (timm's ``dynamic_mask``; a
        grid not divisible by the window is padded inside the block). No parameter changes."""
        self.model.patch_embed.strict_img_size = False
        for stage in self.stages:
            for blk in stage.blocks:
                blk.dynamic_mask = True
        self.any_size = True

    # ------------------------------------------------------------------ forward

    def forward(self, images: Tensor) -> Tensor:
        """Unimodal encoding: ``(B, 3, S, S)`` -> ``(B, N, C)`` tokens of the last stage after the
        final LayerNorm (timm's ``forward_features``, flattened row-major)."""
        self._check(images)
        feats = self.model.forward_features(images)
        return feats.flatten(1, 2)

    def embed(self, images: Tensor) -> Tensor:
        """Patch embedding: ``(B, 3, S, S)`` -> ``(B, H, W, C_0)``."""
        self._check(images)
        return self.model.patch_embed(images)

    def enter(self, x: Tensor, stage: int, block: int) -> Tensor:
        """The input of block ``block`` of ``stage``: the stage's patch merging runs first when
        ``block == 0``. ``(B, H, W, C)`` -> ``(B, H', W', C')``."""
        return self.stages[stage].downsample(x) if block == 0 else x

    def block(self, x: Tensor, stage: int, block: int) -> Tensor:
        """timm's block ``block`` of ``stage`` on its input ``(B, H, W, C)``."""
        return self.stages[stage].blocks[block](x)

    def fused_block(
        self,
        x: Tensor,
        stage: int,
        block: int,
        cross: GatedCrossAttention,
        text: Tensor,
        text_mask: Tensor,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Block ``block`` of ``stage`` with image-to-text cross-attention.

        Args:
            x: ``(B, H, W, C)`` the block's input.
            cross: the pair's image-to-text cross-attention (queries ``C`` wide).
            text: ``(B, L, Dt)`` text states (the paired text layer's input).
            text_mask: ``(B, L)`` 1 for real text tokens, 0 for padding.
            need_weights: also return the cross-attention weights ``(B, H_s, H*W, L)``.

        Returns:
            ``(x', weights)``, ``x'`` ``(B, H, W, C)``.
        """
        blk = self.stages[stage].blocks[block]
        b, h, w, c = x.shape
        attn = blk._attn(blk.norm1(x))  # window self-attention, projected, (B, H, W, C)
        y, weights = cross(attn.reshape(b, h * w, c), text, text_mask, need_weights)
        x = x + blk.drop_path1(attn + y.view(b, h, w, c))
        x = x.reshape(b, -1, c)
        x = x + blk.drop_path2(blk.mlp(blk.norm2(x)))
        return x.reshape(b, h, w, c), weights

    def finish(self, x: Tensor, final_norm: bool = True) -> Tensor:
        """``(B, H, W, C)`` after the last block -> ``(B, N, C)`` tokens, through the final
        LayerNorm when ``final_norm``."""
        if final_norm:
            x = self.model.norm(x)
        return x.flatten(1, 2)

    def _check(self, images: Tensor) -> None:
        size = self.cfg.image_size
        if self.any_size:
            patch = self.cfg.patch_size
            if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] % patch or (
                    images.shape[3] % patch):
                raise ValueError(f"expected images (B, 3, H, W) with H and W divisible by "
                                 f"{patch}, got {tuple(images.shape)}")
            return
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (size, size):
            raise ValueError(
                f"the FIBER image backbone expects images of shape (B, 3, {size}, {size}) "
                f"(model.visual.image_size), got {tuple(images.shape)}"
            )

    # ------------------------------------------------------------------ weights

    def no_weight_decay(self) -> set[int]:
        """``id`` of the parameters timm exempts from weight decay (relative-position tables)."""
        names = set(self.model.no_weight_decay())
        return {id(p) for n, p in self.model.named_parameters() if n in names}

    def load_pretrained(self, source: str) -> LoadReport:
        """Load Swin weights into ``model``; keys as in timm.

        Args:
            source: ``"timm"`` (timm's pretrained weights of ``cfg.arch``, from the local Hugging
                Face cache when offline) or a local checkpoint file (``.safetensors``, ``.pth``,
                ...), adapted by timm's Swin ``checkpoint_filter_fn`` (relative-position tables
                resized to the window); the classifier head is ignored.

        Raises:
            ConfigError: the weights cannot be had; the message names the override.
        """
        override = (
            "set model.visual.pretrained to a local Swin checkpoint file, or to null to start "
            "the image backbone from a random initialisation"
        )
        if source == "timm":
            try:
                state = timm_pretrained_state(self.cfg.arch, override, **timm_kwargs(self.cfg))
            except RuntimeError as e:
                raise ConfigError(str(e)) from e
            note = f"timm pretrained weights of {self.cfg.arch}"
        else:
            try:
                path = existing_checkpoint(source)
            except FileNotFoundError as e:
                raise ConfigError(f"{e}; {override}") from None
            from timm.models.swin_transformer import checkpoint_filter_fn

            state = checkpoint_filter_fn(read_state_dict(path), self.model)
            note = f"read {path}"
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        with torch.no_grad():
            report = load_state_dict_report(self.model, state)
        report.notes.append(note)
        return report
