"""A CPU stand-in for ``torch.cuda.set_sync_debug_mode("error")`` at the level of aten ops.

:class:`HostTraffic` records every operation of a pass that, on a GPU, would move data between
the host and the device inside the step: a read-back (``item``, ``bool``, ``float``...), an
output whose size depends on the data (``nonzero``, ``masked_select``, a boolean index), a
tensor made from host data (``torch.tensor(...)``), and any operation that touches a CPU tensor
while the model and batch live on another device (run it on ``meta``: a CPU index into a
device tensor is a copy from the host).
"""

from __future__ import annotations

import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

READ_BACK = {"aten._local_scalar_dense.default", "aten.nonzero.default",
             "aten.masked_select.default", "aten.lift_fresh.default"}


class HostTraffic(TorchDispatchMode):
    """``with HostTraffic() as t: ...``, then ``t.events``: ``(op, where)`` pairs, ``where``
    the innermost vlparse frame (``file.py:line``)."""

    def __init__(self, host_device: bool = False) -> None:
        super().__init__()
        self.host_device = host_device  # also flag ops on CPU tensors (run the pass on meta)
        self.events: list[tuple[str, str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        out = func(*args, **kwargs)
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        boolean_index = name.startswith("aten.index") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool
            for i in tree_flatten(args[1:2])[0])
        on_host = self.host_device and any(t.device.type == "cpu" for t in tensors)
        if name in READ_BACK or boolean_index or on_host:
            self.events.append((name, _where()))
        return out


def _where() -> str:
    frames = [f for f in traceback.extract_stack() if "/vlparse/" in f.filename.replace("\\", "/")]
    return f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else "?"
