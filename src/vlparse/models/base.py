"""What every vlparse model shares: self-contained saving and loading, and parameter groups by
module role.

:class:`PretrainedMixin` (like transformers' ``PreTrainedModel``): ``save_pretrained(dir)``
writes ``config.json`` (the family, the architecture, the model config as plain data, the
vocabulary size and special ids, task metadata such as ``id2label``) and ``model.safetensors``,
and with a processor its tokenizer files; ``Cls.from_pretrained(dir)`` needs nothing else: no run
folder, no absolute path, no pickle.

:func:`role_param_groups`: a model names its roles (``visual``, ``fusion``, ``head`` ...) by the
sub-modules that fill them and their learning rates; each role is split into weights that decay
and those that do not (biases, norms, and what a module declares in ``no_weight_decay()``, the
timm convention: position and token-type tables, Swin's relative position bias tables).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from vlparse.io.files import apply_umask, atomic_write_json

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "PretrainedMixin",
    "no_weight_decay_names",
    "read_pretrained_config",
    "role_param_groups",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full names of the parameters that the sub-modules of ``model`` exempt from weight decay
    through a ``no_weight_decay()`` method (names relative to the declaring module)."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        declared = getattr(module, "no_weight_decay", None)
        if callable(declared):
            names |= {f"{prefix}.{n}" if prefix else n for n in declared()}
    return names


def role_param_groups(
    model: nn.Module,
    roles: Sequence[tuple[str, Sequence[str] | None, float]],
    weight_decay: float,
) -> list[dict[str, Any]]:
    """AdamW parameter groups by module role, each split into decay and no-decay.

    Args:
        model: the model whose trainable parameters are grouped.
        roles: ``(role, names, learning rate)`` in group order; ``names`` are sub-modules or
            parameters of ``model`` (dotted, e.g. ``backbone.visual``; a parameter goes to the
            role of its longest named prefix), or ``None`` for every parameter no role names.
        weight_decay: of the decay groups; no-decay groups get 0. A parameter does not decay
            when it has at most one dimension (biases, norms, single vectors) or a module
            declares it in ``no_weight_decay()``.

    Returns:
        ``[{"name": "<role>_decay" | "<role>_no_decay", "params", "lr", "weight_decay"}]``,
        empty groups left out, parameters in ``named_parameters`` order.

    Raises:
        ValueError: a trainable parameter is in no role, or a role names nothing in ``model``.
    """
    exempt = no_weight_decay_names(model)
    owners = {name: i for i, (_, names, _) in enumerate(roles) for name in names or ()}
    rest = next((i for i, (_, names, _) in enumerate(roles) if names is None), None)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    prefixes = {".".join(n.split(".")[:k]) for n, _ in named for k in range(1, n.count(".") + 2)}
    unknown = sorted(set(owners) - prefixes)
    if unknown:
        raise ValueError(f"role_param_groups: no trainable parameters under {unknown}")
    buckets: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, p in named:
        parts = name.split(".")
        # the longest role name that is a prefix of the parameter's (``backbone.visual`` before
        # ``backbone``)
        role = next((owners[".".join(parts[:k])] for k in range(len(parts), 0, -1)
                     if ".".join(parts[:k]) in owners), rest)
        if role is None:
            raise ValueError(f"role_param_groups: parameter {name!r} is in no role")
        buckets.setdefault((role, p.ndim <= 1 or name in exempt), []).append(p)
    groups = []
    for i, (role, _, lr) in enumerate(roles):
        for no_decay in (False, True):
            params = buckets.get((i, no_decay))
            if params:
                groups.append({
                    "name": f"{role}_{'no_decay' if no_decay else 'decay'}",
                    "params": params,
                    "lr": lr,
                    "weight_decay": 0.0 if no_decay else weight_decay,
                })
    return groups


def read_pretrained_config(directory: str | Path) -> dict[str, Any]:
    """``config.json`` of a :meth:`PretrainedMixin.save_pretrained` folder.

    Raises:
        FileNotFoundError: no such folder, or no ``config.json`` / ``model.safetensors`` in it.
        ValueError: ``config.json`` is not a JSON object with ``family`` and ``architecture``.
    """
    folder = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder}: no {name}; a folder written by save_pretrained holds {CONFIG_NAME} "
                f"and {WEIGHTS_NAME}"
            )
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{folder / CONFIG_NAME}: not valid JSON ({e})") from e
    if not isinstance(config, dict) or not {"family", "architecture"} <= config.keys():
        raise ValueError(f"{folder / CONFIG_NAME}: expected an object with 'family' and "
                         "'architecture'")
    return config


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module``.

    A subclass sets :attr:`family` and implements :meth:`pretrained_config` (what its
    ``config.json`` records besides family and architecture) and :meth:`from_pretrained_config`
    (build an untrained instance from it, no I/O).
    """

    family: ClassVar[str] = ""

    def pretrained_config(self, processor: Any = None) -> dict[str, Any]:
        """The JSON-ready description of this model (the processor, when saved with it)."""
        raise NotImplementedError

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any], directory: Path) -> Any:
        """An untrained instance from ``config`` (``directory`` holds the saved files)."""
        raise NotImplementedError

    def save_pretrained(self, directory: str | Path, processor: Any = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` (tied weights stored once) and, with a
        ``processor``, its tokenizer and image settings into ``directory`` (created).

        Returns:
            ``directory`` as a Path.
        """
        from safetensors.torch import save_model

        assert isinstance(self, nn.Module)
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "format_version": FORMAT_VERSION,
            "family": self.family,
            "architecture": type(self).__name__,
            **self.pretrained_config(processor),
        }
        if processor is not None:
            processor.save_pretrained(folder)
        save_model(self, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
        apply_umask(folder / WEIGHTS_NAME)  # safetensors writes its files 0o600
        atomic_write_json(folder / CONFIG_NAME, config)
        return folder

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> Any:
        """The model saved in ``directory`` by :meth:`save_pretrained`, in eval mode on the CPU.

        Raises:
            FileNotFoundError: the folder or one of its files is missing.
            ValueError: the folder holds another architecture.
            RuntimeError: the weights do not match the architecture (keys named).
        """
        from safetensors.torch import load_model

        folder = Path(directory)
        config = read_pretrained_config(folder)
        if config["architecture"] != cls.__name__:
            raise ValueError(
                f"{folder} holds a {config['architecture']} ({config['family']}), not a "
                f"{cls.__name__}; load it with {config['architecture']}.from_pretrained"
            )
        model = cls.from_pretrained_config(config, folder)
        try:
            load_model(model, str(folder / WEIGHTS_NAME), strict=True)
        except RuntimeError as e:
            raise RuntimeError(f"{folder / WEIGHTS_NAME} does not match {cls.__name__} "
                               f"built from {CONFIG_NAME}: {e}") from None
        return model.eval()
