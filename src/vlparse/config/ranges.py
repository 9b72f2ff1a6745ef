"""Ranges of numeric config fields, declared next to the field and checked by one function.

>>> lr: float = ranged(5e-5, gt=0)                # must be > 0
>>> dropout: float = ranged(0.1, ge=0, lt=1)      # must be in [0, 1)
>>> max_steps: int | None = ranged(None, ge=1)    # must be >= 1, or null
>>> depths: list[int] | None = ranged(None, ge=1) # each element must be >= 1

The range of a list applies to each element; ``None`` is allowed when the annotation allows it.
:class:`vlparse.config.base.Config` checks the ranges on construction.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import MISSING
from typing import Any

__all__ = ["RANGE", "Range", "ranged"]

RANGE = "range"
"""The key of a field's :class:`Range` in its dataclass metadata."""


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a number: ``gt``/``ge`` below, ``lt``/``le`` above (``None`` = unbounded)."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def __contains__(self, x: float) -> bool:
        if math.isnan(x):
            return False
        return (
            (self.gt is None or x > self.gt)
            and (self.ge is None or x >= self.ge)
            and (self.lt is None or x < self.lt)
            and (self.le is None or x <= self.le)
        )

    def __str__(self) -> str:
        low = "(" if self.gt is not None else "[" if self.ge is not None else None
        high = ")" if self.lt is not None else "]" if self.le is not None else None
        lo, hi = _first(self.gt, self.ge), _first(self.lt, self.le)
        if low and high:
            return f"in {low}{_num(lo)}, {_num(hi)}{high}"
        if low:
            return f"{'>' if low == '(' else '>='} {_num(lo)}"
        if high:
            return f"{'<' if high == ')' else '<='} {_num(hi)}"
        return "any number"


def _first(a: float | None, b: float | None) -> float | None:
    return a if a is not None else b


def _num(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def ranged(
    default: Any = MISSING,
    *,
    factory: Any = MISSING,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Any:
    """A dataclass field (``default`` or ``factory``) whose value must lie in the range."""
    meta = {RANGE: Range(gt=gt, ge=ge, lt=lt, le=le)}
    if factory is not MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
