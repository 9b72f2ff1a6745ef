"""Nested training state (optimizer, scheduler, RNG, loop state) as JSON plus named tensors.

``encode`` turns a structure of dicts, lists, tuples, numbers, strings, ``None``, tensors and
numpy arrays into a JSON-ready tree in which every tensor is replaced by a reference to an entry
of a flat ``{name: tensor}`` dict (stored with safetensors); ``decode`` rebuilds the structure.
Reading either file runs no code, unlike a pickle. Anything else (a class instance, a function)
is refused when encoding, naming where it sits, so nothing is ever stored in a form that cannot
be read back this way.

Tags keep what JSON alone would lose: ``{"__tensor__": name}``, ``{"__ndarray__": name,
"dtype": ...}``, ``{"__tuple__": [...]}`` and ``{"__items__": [[key, value], ...]}`` for a dict
whose keys are not all strings (the optimizer's state is keyed by parameter index).
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import Tensor

__all__ = ["encode", "decode", "pack", "unpack", "StateFormatError"]

_TAGS = ("__tensor__", "__ndarray__", "__tuple__", "__items__", "__float__")


class StateFormatError(ValueError):
    """A value cannot be stored (encode) or a stored tree is malformed (decode)."""


def encode(obj: Any, tensors: dict[str, Tensor], where: str = "state") -> Any:
    """The JSON-ready tree of ``obj``; its tensors are added to ``tensors`` under names derived
    from their place (``where``)."""
    seen = {t.untyped_storage().data_ptr() for t in tensors.values()}
    return _encode(obj, tensors, where, seen)


def _encode(obj: Any, tensors: dict[str, Tensor], where: str, seen: set[int]) -> Any:
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, Tensor):
        t = obj.detach().cpu().contiguous()
        if t.untyped_storage().data_ptr() in seen and t.numel():
            t = t.clone()  # safetensors refuses tensors that share memory
        seen.add(t.untyped_storage().data_ptr())
        tensors[where] = t
        return {"__tensor__": where}
    if isinstance(obj, np.ndarray):
        tensors[where] = torch.from_numpy(obj.astype(np.int64) if obj.dtype.kind == "u"
                                          else np.ascontiguousarray(obj))
        return {"__ndarray__": where, "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), tensors, where, seen)
    if isinstance(obj, (tuple, list)):
        items = [_encode(v, tensors, f"{where}.{i}", seen) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if isinstance(obj, dict):
        if all(isinstance(k, str) and k not in _TAGS for k in obj):
            return {k: _encode(v, tensors, f"{where}.{k}", seen) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors, f"{where}.key{i}", seen),
                               _encode(v, tensors, f"{where}.{k}", seen)]
                              for i, (k, v) in enumerate(obj.items())]}
    raise StateFormatError(
        f"{where}: a {type(obj).__name__} cannot be stored in a checkpoint (only numbers, "
        "strings, lists, tuples, dicts, tensors and numpy arrays)"
    )


def decode(tree: Any, tensors: dict[str, Tensor]) -> Any:
    """The structure that :func:`encode` turned into ``tree``."""
    if isinstance(tree, list):
        return [decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return _tensor(tree["__tensor__"], tensors)
    if "__ndarray__" in tree:
        return _tensor(tree["__ndarray__"], tensors).numpy().astype(np.dtype(tree["dtype"]))
    if "__float__" in tree:
        return float(tree["__float__"])
    if "__tuple__" in tree:
        return tuple(decode(v, tensors) for v in tree["__tuple__"])
    if "__items__" in tree:
        items = tree["__items__"]
        if not all(isinstance(kv, list) and len(kv) == 2 for kv in items):
            raise StateFormatError("malformed '__items__' entry")
        return {_key(decode(k, tensors)): decode(v, tensors) for k, v in items}
    return {k: decode(v, tensors) for k, v in tree.items()}


def _tensor(name: Any, tensors: dict[str, Tensor]) -> Tensor:
    if not isinstance(name, str) or name not in tensors:
        raise StateFormatError(f"the tensor {name!r} is missing from the tensor file")
    return tensors[name]


def _key(k: Any) -> Any:
    if isinstance(k, (list, dict)):
        raise StateFormatError(f"a dict key cannot be a {type(k).__name__}")
    return k


def pack(obj: Any) -> bytes:
    """``obj`` as bytes (the :func:`encode` tree as JSON, then its tensors as safetensors), e.g.
    to send a process's RNG state to another."""
    tensors: dict[str, Tensor] = {}
    head = json.dumps(encode(obj, tensors)).encode()
    return struct.pack("<Q", len(head)) + head + safetensors.torch.save(tensors)


def unpack(data: bytes) -> Any:
    """What :func:`pack` packed."""
    (n,) = struct.unpack("<Q", data[:8])
    tree = json.loads(data[8 : 8 + n])
    return decode(tree, safetensors.torch.load(data[8 + n :]))
