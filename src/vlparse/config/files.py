"""YAML config files that compose (``base``), built-in names, ``key=value`` overrides, and
:func:`load_config`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from vlparse.config.base import from_dict
from vlparse.config.finetune import FinetuneConfig
from vlparse.config.pretrain import PretrainConfig
from vlparse.errors import ConfigError

__all__ = ["builtin_configs", "builtin_recipes", "load_yaml", "apply_overrides", "load_config"]


def builtin_configs() -> list[str]:
    """Names of the YAML configs shipped with vlparse (``tiny``, ``ablation``, ``paper``, ...)."""
    root = resources.files("vlparse") / "configs"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def builtin_recipes() -> list[str]:
    """Names of the fine-tuning recipes shipped in ``vlparse/configs/finetune`` (``retrieval``,
    ``vqa``, ``retrieval_world``, ...)."""
    root = resources.files("vlparse") / "configs" / "finetune"
    if not root.is_dir():
        return []
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _resolve(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    p = Path(name_or_path)
    if relative_to is not None and not p.is_absolute() and (relative_to / p).exists():
        return relative_to / p
    if p.exists():
        return p
    name = str(name_or_path)
    if name in builtin_configs():
        return Path(str(resources.files("vlparse") / "configs" / f"{name}.yaml"))
    if name.startswith("finetune/") and name[len("finetune/"):] in builtin_recipes():
        return Path(str(resources.files("vlparse") / "configs" / f"{name}.yaml"))
    raise ConfigError(
        f"config '{name_or_path}' is neither a file nor a built-in name; "
        f"built-in: {', '.join(builtin_configs())}; fine-tuning recipes: "
        f"{', '.join(builtin_recipes())}"
    )


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def load_yaml(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config, following its ``base`` chain."""
    path = _resolve(name_or_path)
    if path in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    base = data.pop("base", None)
    if base is not None:
        base_path = _resolve(base, path.parent)
        data = _deep_merge(load_yaml(base_path, (*_seen, path)), data)
    return data


def _parse_value(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a nested dict."""
    out = _deep_merge({}, data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override '{item}' must look like key=value, e.g. train.batch_size=32"
            )
        key, _, raw = item.partition("=")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = _parse_value(raw)
    return out


def load_config(
    name_or_path: str | Path | None = None,
    overrides: list[str] | None = None,
    cls: type = PretrainConfig,
) -> Any:
    """Load a config by built-in name or path, apply overrides, validate.

    >>> cfg = load_config("tiny", ["train.batch_size=8"])

    With ``cls=FinetuneConfig`` a bare name is looked up among the fine-tuning recipes first
    (``retrieval`` -> ``vlparse/configs/finetune/retrieval.yaml``), and the ``model`` section of
    the config named by ``model_from`` (default ``paper``) is the base of the recipe's ``model``
    keys (overrides included).

    >>> ft = load_config("retrieval_world", ["train.epochs=2"], cls=FinetuneConfig)
    """
    finetune = cls is FinetuneConfig
    if finetune and name_or_path is not None and not Path(name_or_path).exists():
        if str(name_or_path) in builtin_recipes():
            name_or_path = f"finetune/{name_or_path}"
    data = load_yaml(name_or_path) if name_or_path is not None else {}
    data = apply_overrides(data, overrides or [])
    where = str(name_or_path) if name_or_path is not None else "<defaults>"
    try:
        if finetune:
            data = _with_model_base(data, name_or_path)
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _with_model_base(data: dict[str, Any], recipe: str | Path | None) -> dict[str, Any]:
    """``data`` with ``model`` = (``model`` of the ``model_from`` config) <- ``data['model']``."""
    source = data.get("model_from", FinetuneConfig.model_from)
    if source is None:
        return data
    if not isinstance(source, str):
        raise ConfigError(f"model_from: expected a config name or path, got {source!r}")
    here = _resolve(recipe).parent if recipe is not None else None
    base = load_yaml(_resolve(source, here)).get("model", {})
    top = data.get("model", {})
    if not isinstance(top, dict):
        raise ConfigError(f"model: expected a mapping, got {top!r}")
    return {**data, "model": _deep_merge(base, top)}
