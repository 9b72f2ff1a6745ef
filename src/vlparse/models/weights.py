"""Loading weights: one report type, one reader, and the BERT -> vlparse key mapping.

Every loader in :mod:`vlparse.models` goes through :func:`load_state_dict_report`, which loads
non-strictly and returns a :class:`LoadReport` naming the keys the module expected but did not
get (``missing``) and the keys of the checkpoint it did not use (``unexpected``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vlparse.errors import PretrainedUnavailableError

__all__ = [
    "LoadReport",
    "load_state_dict_report",
    "read_state_dict",
    "timm_pretrained_state",
    "existing_checkpoint",
    "builtin_weights",
    "map_bert_state_dict",
]

_SHOW = 12  # keys listed per category in ``str(report)``


@dataclass
class LoadReport:
    """What a weight load did.

    Attributes:
        missing: keys of the module that the checkpoint did not provide (left as initialised).
        unexpected: keys of the checkpoint that the module does not have (ignored).
        notes: free-form remarks (layers dropped, tables sliced, source file, ...).
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        def block(title: str, keys: list[str]) -> list[str]:
            lines = [f"{title} ({len(keys)}):"]
            lines += [f"  {k}" for k in keys[:_SHOW]]
            if len(keys) > _SHOW:
                lines.append(f"  ... and {len(keys) - _SHOW} more")
            return lines

        lines = block("missing keys", self.missing) + block("unexpected keys", self.unexpected)
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def prefixed(self, prefix: str) -> LoadReport:
        """The same report with ``prefix`` put before every missing key (a submodule's name)."""
        missing = [prefix + k for k in self.missing]
        return LoadReport(missing, list(self.unexpected), list(self.notes))


def load_state_dict_report(module: nn.Module, state_dict: dict[str, Tensor]) -> LoadReport:
    """Load ``state_dict`` into ``module`` with ``strict=False`` and report what did not match.

    Shape mismatches are not silently skipped: ``torch`` raises and the error is re-raised with
    the offending keys named.
    """
    try:
        result = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as e:
        raise RuntimeError(
            f"loading weights into {type(module).__name__} failed (a shape does not match the "
            f"architecture; check that the config matches the checkpoint): {e}"
        ) from None
    return LoadReport(missing=list(result.missing_keys), unexpected=list(result.unexpected_keys))


def timm_pretrained_state(arch: str, hint: str, **kwargs: Any) -> dict[str, Tensor]:
    """The state dict of timm's pretrained ``arch`` (``model.visual.pretrained='timm'``).

    Offline, the weights must already be in the local Hugging Face cache; any failure becomes a
    :class:`~vlparse.errors.PretrainedUnavailableError` that says so, then ``hint`` (how to point
    to a local copy) and the override that turns the initialisation off.
    """
    import timm

    try:
        return timm.create_model(arch, pretrained=True, **kwargs).state_dict()
    except Exception as e:  # hub / cache errors come in many types
        raise PretrainedUnavailableError(
            f"model.visual.pretrained='timm': could not get timm's pretrained weights for "
            f"'{arch}' ({type(e).__name__}: {e}). Without internet they must already be in the "
            f"Hugging Face cache. {hint} (a local copy), or set model.visual.pretrained=null to "
            "start from random weights"
        ) from e


BUILTIN_PREFIX = "builtin:"
"""``model.visual.pretrained='builtin:NAME'``: the weights file ``vlparse/weights/NAME``."""


def builtin_weights() -> dict[str, Path]:
    """The weights shipped with the package: ``{name: path}`` of ``vlparse/weights/*.safetensors``
    (each with a ``.json`` beside it saying how it was made)."""
    from importlib.resources import files

    folder = Path(str(files("vlparse") / "weights"))
    return {p.stem: p for p in sorted(folder.glob("*.safetensors"))}


def existing_checkpoint(source: str | Path) -> Path:
    """``source`` as a Path (``builtin:NAME`` resolved to the shipped file), or
    FileNotFoundError naming ``model.visual.pretrained``."""
    text = str(source)
    if text.startswith(BUILTIN_PREFIX):
        name = text[len(BUILTIN_PREFIX):]
        shipped = builtin_weights()
        if name not in shipped:
            raise FileNotFoundError(
                f"model.visual.pretrained: no built-in weights '{name}'; shipped: "
                f"{', '.join(sorted(shipped)) or 'none'}"
            )
        return shipped[name]
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"model.visual.pretrained: '{source}' is neither 'timm', 'builtin:NAME' nor an "
            "existing file"
        )
    return path


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict on the CPU.

    Supports ``.safetensors`` and torch pickles (``.pt``, ``.pth``, ``.bin``, ``.ckpt``); a pickle
    holding ``{"model": ...}`` or ``{"state_dict": ...}`` is unwrapped. A directory is searched
    for ``model.safetensors`` then ``pytorch_model.bin`` (a Hugging Face model folder).
    """
    p = Path(path)
    if p.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (p / name).is_file():
                return read_state_dict(p / name)
        raise FileNotFoundError(
            f"{p}: directory has no model.safetensors or pytorch_model.bin; "
            "pass the checkpoint file itself"
        )
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p), device="cpu")
    if p.suffix not in (".pt", ".pth", ".bin", ".ckpt"):
        raise ValueError(
            f"{p}: unknown checkpoint extension '{p.suffix}'; "
            "expected .safetensors, .pt, .pth, .bin or .ckpt"
        )
    obj = torch.load(str(p), map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{p}: expected a state dict, found {type(obj).__name__}")
    return obj


# BERT layer suffix -> vlparse encoder layer suffix (see transformer.EncoderLayer).
_LAYER_MAP = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attn_out",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
    "output.LayerNorm": "ffn_norm",
}
_EMB_MAP = {
    "word_embeddings": "word_embeddings",
    "position_embeddings": "position_embeddings",
    "token_type_embeddings": "token_type_embeddings",
    "LayerNorm": "norm",
}
_HEAD_MAP = {
    "cls.predictions.transform.dense": "mlm_head.dense",
    "cls.predictions.transform.LayerNorm": "mlm_head.norm",
}
_LAYER_RE = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias|gamma|beta)$")


def _strip_prefix(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop a leading ``bert.`` (BertForPreTraining / BertForMaskedLM checkpoints)."""
    if any(k.startswith("bert.") for k in sd):
        return {(k[5:] if k.startswith("bert.") else k): v for k, v in sd.items()}
    return sd


def _param_name(suffix: str) -> str:
    return {"gamma": "weight", "beta": "bias"}.get(suffix, suffix)


def map_bert_state_dict(
    state_dict: dict[str, Tensor], num_layers: int | None = None
) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """Map a BERT-family state dict onto :class:`~vlparse.models.VisualParsingModel` names.

    ``embeddings.*`` -> ``text_embed.*``, ``encoder.layer.i.*`` -> ``encoder.layers.i.*``, and
    for pre-training checkpoints ``cls.predictions.transform.*`` -> ``mlm_head.*`` and
    ``cls.predictions.bias`` -> ``mlm_head.bias`` (the decoder weight is tied to the word
    embeddings). Layers ``>= num_layers`` are dropped (the first ``num_layers`` are kept).

    Returns:
        ``(mapped, unused, notes)``: the renamed tensors, the checkpoint keys that have no place
        in vlparse (pooler, NSP head, ``position_ids``, dropped layers) and remarks.
    """
    sd = _strip_prefix(state_dict)
    mapped: dict[str, Tensor] = {}
    unused: list[str] = []
    notes: list[str] = []
    dropped: set[int] = set()
    for key, value in sd.items():
        m = _LAYER_RE.match(key)
        if m:
            idx, body, suffix = int(m.group(1)), m.group(2), _param_name(m.group(3))
            if num_layers is not None and idx >= num_layers:
                dropped.add(idx)
                unused.append(key)
            elif body in _LAYER_MAP:
                mapped[f"encoder.layers.{idx}.{_LAYER_MAP[body]}.{suffix}"] = value
            else:
                unused.append(key)
            continue
        if key.startswith("embeddings."):
            body, _, suffix = key[len("embeddings.") :].rpartition(".")
            if body in _EMB_MAP:
                mapped[f"text_embed.{_EMB_MAP[body]}.{_param_name(suffix)}"] = value
                continue
        body, _, suffix = key.rpartition(".")
        if body in _HEAD_MAP:
            mapped[f"{_HEAD_MAP[body]}.{_param_name(suffix)}"] = value
        elif key == "cls.predictions.bias":
            mapped["mlm_head.bias"] = value
        else:
            unused.append(key)
    if dropped:
        notes.append(
            f"checkpoint has {max(dropped) + 1} layers, the model {num_layers}: "
            f"kept the first {num_layers}, dropped layers {sorted(dropped)}"
        )
    return mapped, unused, notes
