"""What every visual embedder shares: a final ``(h, w)`` grid of ``m = h * w`` tokens, the input
check, and (for the timm-backed ones) building the timm model and loading its weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from torch import Tensor, nn

from vlparse.config import VisualConfig
from vlparse.models.weights import LoadReport, load_state_dict_report, timm_pretrained_state

__all__ = ["GridEmbedder", "create_timm_model"]


def create_timm_model(cfg: VisualConfig, kwargs: dict[str, Any], context: str,
                      advice: str) -> nn.Module:
    """``timm.create_model(cfg.arch, pretrained=False, **kwargs)`` (no I/O).

    Raises:
        ValueError: timm cannot build it; the message names the arch, ``context`` (what was
            asked, e.g. ``for kind=resnet``), timm's reason and ``advice`` (what to change).
    """
    try:
        return timm.create_model(cfg.arch, pretrained=False, **kwargs)
    except (RuntimeError, ValueError, TypeError, AssertionError) as e:
        raise ValueError(
            f"model.visual: cannot build timm model '{cfg.arch}' {context}: {e}. {advice}"
        ) from e


class GridEmbedder(nn.Module):
    """Base of the visual embedders.

    A subclass sets ``self.cfg``, ``self.model`` and ``self._grid = (h, w)`` in ``__init__``.
    ``out_dim`` and ``set_grad_checkpointing`` assume ``model`` is a timm model; an embedder
    built otherwise overrides them.
    """

    has_attention = False
    cfg: VisualConfig
    model: nn.Module
    _grid: tuple[int, int]

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(h, w)`` of the final token grid."""
        return self._grid

    @property
    def num_tokens(self) -> int:
        """``m = h * w`` visual tokens."""
        return self._grid[0] * self._grid[1]

    @property
    def out_dim(self) -> int:
        """``c``, the width of a visual token (the timm model's ``num_features``)."""
        return int(self.model.num_features)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn timm's per-stage gradient checkpointing on or off."""
        self.model.set_grad_checkpointing(enable)

    def _check_images(self, images: Tensor) -> None:
        """Raise ``ValueError`` unless ``images`` is ``(B, 3, S, S)``, ``S = cfg.image_size``."""
        size = self.cfg.image_size
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (size, size):
            raise ValueError(
                f"{type(self).__name__} expects images of shape (B, 3, {size}, {size}) "
                f"(model.visual.image_size), got {tuple(images.shape)}"
            )

    def _load_timm_pretrained(self, hint: str, **timm_kwargs: Any) -> LoadReport:
        """Load timm's pretrained weights of ``cfg.arch`` (local cache) into ``model``.

        ``hint`` ends the error raised when they cannot be had; ``timm_kwargs`` build the timm
        model the weights come from (the same head-less shape as ``model``).
        """
        state = timm_pretrained_state(self.cfg.arch, hint, **timm_kwargs)
        report = load_state_dict_report(self.model, state)
        report.notes.append(f"timm pretrained weights of {self.cfg.arch}")
        return report

    def _load_file_state(self, path: Path, state: dict[str, Tensor]) -> LoadReport:
        """Load ``state`` (read from ``path`` and adapted by the caller) into ``model``."""
        report = load_state_dict_report(self.model, state)
        report.notes.append(f"read {path}")
        return report
