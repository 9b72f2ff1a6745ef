"""Config dataclasses that check themselves.

Every config class derives from :class:`Config`. On construction, from YAML or in Python alike,
each field is type-checked and coerced (int -> float, a mapping -> its nested config, a
discriminated union -> the class its tag names), range-checked when declared with
:func:`ranged`, and then :meth:`Config.check` runs the checks across fields::

    @dataclass
    class OptimConfig(Config):
        lr: float = ranged(5e-5, gt=0)                   # OptimConfig(lr=-1) -> FieldError
        betas: list[float] = ranged(factory=lambda: [0.9, 0.999], ge=0, lt=1)

A field typed as a union of config classes that each have a one-value ``Literal`` field (the
tag, e.g. ``name: Literal["vqa"] = "vqa"``) is a discriminated union: a mapping becomes the
class its tag names (the first member when the tag is absent), and a key of another member is
refused with a message naming the member that has it. A field whose choices are known only
from the enclosing config (e.g. the objectives of ``model.family``) is declared with
:func:`chosen_by`.

Errors are :class:`FieldError`: the dotted key (prefixed by each enclosing config on the way
up) and the problem; :func:`vlparse.config.load_config` adds the file and line.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args, get_origin

from vlparse.config.ranges import RANGE, Range
from vlparse.errors import ConfigError

__all__ = ["Config", "FieldError", "chosen_by", "from_dict", "to_dict", "validate"]

OF_SECTION = "<of-section>"
"""In a problem text: `` of 'model'`` for the key ``model.visul`` (nothing at the top level)."""
SECTION_DOT = "<section.>"
"""In a problem text: ``model.`` for the key ``model.visul`` (nothing at the top level)."""


class FieldError(ConfigError):
    """A :class:`~vlparse.errors.ConfigError` about one dotted ``key``, shown as
    ``place: key: problem``. ``place`` is the file and line or the override that set the key
    (added by :func:`~vlparse.config.load_config`); ``also`` names other keys the problem
    involves (their places are shown too); ``owner`` is the config class the key belongs to,
    shown when no place is known (``OptimConfig.lr: ...``)."""

    def __init__(
        self, key: str, problem: str, place: str = "", also: Sequence[str] = (), owner: str = ""
    ) -> None:
        super().__init__(key, problem, place, tuple(also), owner)
        self.key, self.problem, self.place = key, problem, place
        self.also, self.owner = tuple(also), owner

    def __str__(self) -> str:
        section = self.key.rpartition(".")[0]
        problem = self.problem.replace(OF_SECTION, f" of '{section}'" if section else "")
        problem = problem.replace(SECTION_DOT, f"{section}." if section else "")
        if self.place:
            return f"{self.place}: {self.key}: {problem}"
        return f"{self.owner}.{self.key}: {problem}" if self.owner else f"{self.key}: {problem}"

    def under(self, prefix: str) -> FieldError:
        """The same error seen from the config that holds this one at ``prefix``."""
        if not prefix:
            return self
        keys = [f"{prefix}{'' if k.startswith('[') else '.'}{k}" for k in (self.key, *self.also)]
        return FieldError(keys[0], self.problem, self.place, keys[1:])

    def located(self, place: str) -> FieldError:
        """The same error, set at ``place`` (a file and line, or an override)."""
        return FieldError(self.key, self.problem, place, self.also)

    def owned_by(self, owner: str) -> FieldError:
        """The same error, its key belonging to the config class named ``owner``."""
        return FieldError(self.key, self.problem, self.place, self.also, owner)


class Config:
    """Base of the config dataclasses: checks types, ranges and :meth:`check` on construction."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        try:
            for f in dataclasses.fields(self):  # in order: chosen_by may read earlier fields
                chooser = f.metadata.get("chosen_by")
                tp = chooser(self) if chooser is not None else hints[f.name]
                value = getattr(self, f.name)
                if value is None and chooser is not None:
                    value = _default_of(tp)
                value = _coerce(value, tp, f.name)
                _check_range(f.metadata.get(RANGE), value, f.name)
                setattr(self, f.name, value)
            self.check()
        except FieldError as e:
            raise e.owned_by(type(self).__name__) from None

    def check(self) -> None:
        """Checks across fields; raise :class:`FieldError` naming the key at fault (and in
        ``also`` the other keys involved)."""


def chosen_by(choose: Callable[[Any], Any]) -> Any:
    """A config field whose type is ``choose(config)``, called during validation after the
    fields before it are checked (so it may read them). ``None`` (the default) stands for a
    default instance of the chosen type (the first member of a union)."""
    return dataclasses.field(default=None, metadata={"chosen_by": choose})


def _check_range(rng: Range | None, value: Any, key: str) -> None:
    """Refuse ``value`` (or an element of a list) outside ``rng``, naming key, value and range."""
    if rng is None or value is None:
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_range(rng, v, f"{key}[{i}]")
    elif value not in rng:
        raise FieldError(key, f"{value!r} is out of range; must be {rng}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    return "null" if tp is type(None) else getattr(tp, "__name__", None) or str(tp)


def _default_of(tp: Any) -> Any:
    members = get_args(tp) if get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return members[0]()


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert YAML/CLI values (int -> float,
    a list's elements, a mapping -> its config class)."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _coerce_config(value, (tp,), key)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, get_args(tp), key)
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads off/on/no/yes as booleans
            value = "on" if value else "off"
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise FieldError(key, f"{value!r} is not one of {choices}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise FieldError(key, f"expected a list, got {value!r}")
        (elem,) = get_args(tp)
        return [_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value)]
    return _coerce_scalar(value, tp, key)


def _coerce_scalar(value: Any, tp: Any, key: str) -> Any:
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)  # 1e3 from YAML
    wanted = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}
    if tp in wanted and (not isinstance(value, tp) or (tp is not bool and isinstance(value, bool))):
        raise FieldError(key, f"expected {wanted[tp]}, got {value!r}")
    return value


def _coerce_union(value: Any, args: tuple[Any, ...], key: str) -> Any:
    if value is None and type(None) in args:
        return None
    arms = [a for a in args if a is not type(None)]
    if all(dataclasses.is_dataclass(a) for a in arms):
        return _coerce_config(value, tuple(arms), key)
    for arm in arms:
        try:
            return _coerce(value, arm, key)
        except FieldError:
            continue
    raise FieldError(key, f"{value!r} is not {' or '.join(_type_name(a) for a in args)}")


def _coerce_config(value: Any, members: tuple[type, ...], key: str) -> Any:
    """A config instance of one of ``members`` (checked already) or a mapping to build one
    from; with several members, the mapping's tag picks the class."""
    if isinstance(value, members):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = " or ".join(m.__name__ for m in members)
        raise FieldError(key, f"expected {names}, got {type(value).__name__}")
    if not isinstance(value, dict):
        raise FieldError(key, f"expected a mapping, got {value!r}")
    try:
        cls = members[0] if len(members) == 1 else _pick(members, value)
        return from_dict(cls, value)
    except FieldError as e:
        raise e.under(key) from None


def _tags(members: tuple[type, ...]) -> tuple[str, dict[Any, type]]:
    """The tag field of a discriminated union: a one-value ``Literal`` field in every member,
    with a different value in each."""
    for f in dataclasses.fields(members[0]):
        tps = [_hints(m).get(f.name) for m in members]
        if all(get_origin(t) is Literal and len(get_args(t)) == 1 for t in tps):
            tags = {get_args(t)[0]: m for t, m in zip(tps, members, strict=True)}
            if len(tags) == len(members):
                return f.name, tags
    raise TypeError(f"no tag field tells {[m.__name__ for m in members]} apart")


def _pick(members: tuple[type, ...], data: dict[str, Any]) -> type:
    """The member named by ``data``'s tag; a key of another member is refused by name."""
    tag_key, tags = _tags(members)
    default = _hints(members[0])[tag_key]
    tag = _coerce(data.get(tag_key, get_args(default)[0]), Literal[tuple(tags)], tag_key)
    cls = tags[tag]
    own = [f.name for f in dataclasses.fields(cls)]
    for k in data:
        others = [t for t, m in tags.items() if k in {f.name for f in dataclasses.fields(m)}]
        if k not in own and others:
            where = f"{SECTION_DOT}{tag_key}"
            raise FieldError(
                k,
                f"a key of {where}={others[0]!r}, not of {where}={tag!r}; valid keys"
                f"{OF_SECTION} for {where}={tag!r}: {', '.join(own)}",
            )
    return cls


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build config class ``cls`` from a nested mapping (YAML or JSON values), rejecting
    unknown keys by name; errors are :class:`FieldError` with keys under ``where``."""
    if not isinstance(data, dict):
        raise FieldError(where or cls.__name__, f"expected a mapping, got {data!r}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    try:
        for key in data:
            if key not in names:
                valid = ", ".join(names)
                raise FieldError(str(key), f"unknown key; valid keys{OF_SECTION}: {valid}")
        return cls(**data)
    except FieldError as e:
        raise e.under(where) from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts and lists (YAML/JSON-ready); ``from_dict`` of it gives
    an equal config."""
    return dataclasses.asdict(cfg)


def validate(cfg: Config) -> None:
    """Check ``cfg`` again, nested configs first: what construction checks, for a config whose
    attributes were set afterwards."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, Config):
            try:
                validate(value)
            except FieldError as e:
                raise e.under(f.name).owned_by(type(cfg).__name__) from None
    cfg.__post_init__()
