"""What every visual embedder shares: a final ``(h, w)`` grid of ``m = h * w`` tokens."""

from __future__ import annotations

from torch import nn


class GridEmbedder(nn.Module):
    """Base of the visual embedders; a subclass sets ``self._grid = (h, w)`` in ``__init__``."""

    has_attention = False
    _grid: tuple[int, int]

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(h, w)`` of the final token grid."""
        return self._grid

    @property
    def num_tokens(self) -> int:
        """``m = h * w`` visual tokens."""
        return self._grid[0] * self._grid[1]
