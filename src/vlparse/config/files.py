"""YAML config files that compose (``base``), built-in names, ``key=value`` overrides, and
:func:`load_config`.

Reading a file keeps the line of each key (its "mark"), following the ``base`` chain and the
overrides, so that an error names where the value came from::

    configs/my.yaml:12: model.visul: unknown key; valid keys of 'model': family, name, ...
    override 'optim.lr=-1': optim.lr: -1.0 is out of range; must be > 0
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from vlparse.config.base import FieldError, from_dict, to_dict
from vlparse.config.finetune import FinetuneConfig
from vlparse.config.pretrain import PretrainConfig
from vlparse.errors import ConfigError

__all__ = [
    "builtin_configs",
    "builtin_recipes",
    "load_yaml",
    "apply_overrides",
    "with_overrides",
    "load_config",
]

Marks = dict[str, str]
"""Dotted key -> where its value was set: ``"path.yaml:12"`` or ``"override 'k=v'"``."""


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
    if relative_to is not None and not p.is_absolute() and (relative_to / p).is_file():
        return relative_to / p
    if p.is_file():
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


def _parse(path: Path) -> tuple[dict[str, Any], Marks]:
    """One YAML file's mapping and the line of each of its keys."""
    loader = yaml.SafeLoader(path.read_text())
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else {}
    except yaml.MarkedYAMLError as e:
        line = f":{e.problem_mark.line + 1}" if e.problem_mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    marks: Marks = {}
    _mark_keys(node, "", path, marks)
    return data, marks


def _mark_keys(node: yaml.Node, prefix: str, path: Path, marks: Marks) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        here = f"{path}:{key_node.start_mark.line + 1}"
        if key in marks:
            raise ConfigError(f"{here}: {key}: duplicate key (first at {marks[key]})")
        marks[key] = here
        _mark_keys(value_node, f"{key}.", path, marks)


def _load_marked(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> tuple[dict, Marks]:
    path = _resolve(name_or_path)
    if path in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    data, marks = _parse(path)
    base = data.pop("base", None)
    marks.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base: expected a config name or path, got {base!r}")
        base_data, base_marks = _load_marked(_resolve(base, path.parent), (*_seen, path))
        data, marks = _deep_merge(base_data, data), {**base_marks, **marks}
    return data, marks


def load_yaml(name_or_path: str | Path) -> dict[str, Any]:
    """Read a YAML config, following its ``base`` chain."""
    return _load_marked(name_or_path)[0]


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


def _override(data: dict[str, Any], marks: Marks, overrides: list[str]) -> tuple[dict, Marks]:
    """``data`` with the ``a.b.c=value`` strings applied (values parsed as YAML), and the marks
    of the keys they set."""
    out, marks = _deep_merge({}, data), dict(marks)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override '{item}' must look like key=value, e.g. train.batch_size=32"
            )
        key, _, raw = item.partition("=")
        here = f"override '{item}'"
        node, parts = out, key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{here}: '{'.'.join(parts[: i + 1])}' is not a section")
            marks.setdefault(".".join(parts[: i + 1]), here)
        node[parts[-1]] = _parse_value(raw)
        dotted = ".".join(parts)
        marks = {k: v for k, v in marks.items() if not k.startswith(f"{dotted}.")}
        marks[dotted] = here
    return out, marks


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a nested dict."""
    return _override(data, {}, overrides)[0]


def with_overrides(cfg: Any, overrides: list[str]) -> Any:
    """A copy of the config ``cfg`` with ``a.b.c=value`` strings applied and checked; an error
    names the override, e.g. ``override 'task.rerank_k=-1': task.rerank_k: ...``.

    >>> cfg = with_overrides(load_config("tiny"), ["train.max_steps=10"])
    """
    data, marks = _override(to_dict(cfg), {}, overrides)
    try:
        return from_dict(type(cfg), data)
    except FieldError as e:
        raise _located(e, marks, type(cfg).__name__) from None


def _place(key: str, marks: Marks) -> str | None:
    """Where ``key`` (or, for ``depths[1]``, its list) was set."""
    while key not in marks and key.endswith("]"):
        key = re.sub(r"\[\d+\]$", "", key)
    return marks.get(key)


def _located(e: FieldError, marks: Marks, fallback: str) -> FieldError:
    """``e`` with the places of its keys: the file and line, or the override, that set each."""
    lines: dict[str, list[str]] = {}  # file -> its lines, in order; then the overrides
    for p in dict.fromkeys(_place(k, marks) for k in (e.key, *e.also)):
        if p is not None:
            file, _, line = ("", "", p) if p.startswith("override ") else p.rpartition(":")
            lines.setdefault(file, []).append(line)
    places = [f"{file}:{','.join(ls)}" if file else " and ".join(ls) for file, ls in lines.items()]
    return e.located(" and ".join(places) or fallback)


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

    Raises:
        ConfigError: a file, key or value is wrong; a :class:`~vlparse.config.base.FieldError`
            names the file and line (or the override), the dotted key and what is allowed.
    """
    finetune = cls is FinetuneConfig
    if finetune and name_or_path is not None and not Path(name_or_path).is_file():
        if str(name_or_path) in builtin_recipes():
            name_or_path = f"finetune/{name_or_path}"
    data, marks = _load_marked(name_or_path) if name_or_path is not None else ({}, {})
    data, marks = _override(data, marks, overrides or [])
    where = str(_resolve(name_or_path)) if name_or_path is not None else "<defaults>"
    try:
        if finetune:
            data, marks = _with_model_base(data, marks, name_or_path)
        return from_dict(cls, data)
    except FieldError as e:
        raise _located(e, marks, where) from None


def _with_model_base(
    data: dict[str, Any], marks: Marks, recipe: str | Path | None
) -> tuple[dict[str, Any], Marks]:
    """``data`` with ``model`` = (``model`` of the ``model_from`` config) <- ``data['model']``."""
    source = data.get("model_from", FinetuneConfig.model_from)
    if source is None:
        return data, marks
    if not isinstance(source, str):
        raise FieldError("model_from", f"expected a config name or path, got {source!r}")
    here = _resolve(recipe).parent if recipe is not None else None
    try:
        path = _resolve(source, here)
    except ConfigError as e:
        raise FieldError("model_from", str(e)) from None
    base, base_marks = _load_marked(path)
    top = data.get("model", {})
    if not isinstance(top, dict):
        raise FieldError("model", f"expected a mapping, got {top!r}")
    model_marks = {k: v for k, v in base_marks.items() if k.split(".")[0] == "model"}
    return {**data, "model": _deep_merge(base.get("model", {}), top)}, {**model_marks, **marks}
