"""Typed configuration: dataclasses validated on construction, YAML files that compose, and
``key=value`` overrides.

A config file is YAML whose keys mirror the dataclasses below. A file may name a ``base``
(another YAML file, relative to itself, or a built-in name such as ``tiny``) whose values it
overrides. Built-in names resolve to the YAML files shipped in ``vlparse/configs``.

Errors name the file, the dotted key and the valid keys, e.g.::

    ConfigError: configs/my.yaml: unknown key 'model.visul'; valid keys of 'model': visual, text
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from vlparse.errors import ConfigError

__all__ = [
    "ConfigError",
    "VisualConfig",
    "TextConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "PretrainConfig",
    "TaskConfig",
    "FinetuneConfig",
    "FINETUNE_TASKS",
    "load_config",
    "validate_finetune",
    "builtin_configs",
    "builtin_recipes",
    "apply_overrides",
    "to_dict",
    "from_dict",
]


@dataclass
class VisualConfig:
    """The visual embedder.

    ``kind='swin'`` builds a timm Swin Transformer named ``arch``; ``embed_dim``, ``depths``,
    ``num_heads`` override the named architecture (used by the ``tiny`` config). The last stage
    must be a single window (``window_size`` equal to the final grid side) so that its attention
    is a full ``(m, m)`` map; other settings still work, the map is then block-diagonal.
    ``pretrained`` is ``None`` (random init), ``"timm"`` (the weights timm knows for ``arch``,
    from its cache) or a local checkpoint path.

    ``patch_size`` (``None``: the default of the kind) overrides the Swin patch-embedding stride
    (timm's ``patch_size``; e.g. 16 with a single stage, the parser that ``vlparse
    pretrain-parser`` trains fastest on a CPU).

    ``kind='resnet'`` builds a timm ResNet named ``arch`` (e.g. ``resnet50``) whose last stage's
    feature map is flattened into tokens (SOHO-style grid); ``kind='patch'`` is a ViLT-style
    linear projection of ``patch_size`` x ``patch_size`` pixel patches (default 32) with no
    backbone. Neither has attention, so attention-guided MFR is unavailable with them.
    """

    kind: Literal["swin", "resnet", "patch"] = "swin"
    arch: str = "swin_tiny_patch4_window7_224"
    image_size: int = 224
    window_size: int = 7
    embed_dim: int | None = None
    depths: list[int] | None = None
    num_heads: list[int] | None = None
    drop_path_rate: float = 0.1
    patch_size: int | None = None
    pretrained: str | None = None


@dataclass
class TextConfig:
    """Tokenizer and the multi-modal Transformer (BERT-style encoder over ``[CLS] V [SEP] W``).

    ``tokenizer`` is ``"bert-base-uncased"`` (resolved offline, see
    :func:`vlparse.processing.tokenization.build_tokenizer`), any Hugging Face tokenizer name or a
    local path. ``max_text_len`` counts the text part ``W`` (words, trailing ``[SEP]``, padding),
    so a sequence has ``2 + m + max_text_len`` tokens. ``pretrained`` initialises the encoder from a
    BERT checkpoint (Hugging Face name or local path); ``vocab_size`` 0 means "from the tokenizer".
    ``initializer_range`` is the std of the normal initialisation of the Transformer, the text
    embeddings and the heads (BERT's 0.02, sized for width 768; a narrow model trained from
    scratch learns faster with a larger one, e.g. ``1 / sqrt(hidden_size)``).
    """

    tokenizer: str = "bert-base-uncased"
    vocab_size: int = 0
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    dropout: float = 0.1
    attention_dropout: float = 0.1
    max_text_len: int = 40
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pretrained: str | None = None


@dataclass
class ModelConfig:
    """``itc_dim``: width of the optional image-text contrastive projections (0 = none; needed
    by ``objectives.lambda_itc > 0``)."""

    name: str = "custom"
    visual: VisualConfig = field(default_factory=VisualConfig)
    text: TextConfig = field(default_factory=TextConfig)
    itc_dim: int = 0


@dataclass
class ObjectiveConfig:
    """Pre-training objectives (paper section 3.3 and 4.1).

    ``itm_pass``: ``"separate"`` (default) runs ITM and VLA on clean texts of all four pairs and a
    second pass with masked text and masked visual tokens on the two matched pairs for MLM and MFR;
    ``"shared"`` runs one pass over all four pairs with masking applied to all of them and computes
    MLM and MFR on the matched pairs only (cheaper, one pass; masks then appear in both matched and
    unmatched pairs, so they carry no label information).
    ``mfr_k``: tokens masked by MFR (the picked token plus its top attended ones); if ``mfr_ratio``
    is set, ``k = round(m * mfr_ratio)`` instead (the ablation's ``k = m * p``).
    ``lambda_itc``: weight of an image-text contrastive term added to the total (0 = the paper's
    objectives only; see :mod:`vlparse.objectives.itc`); needs ``model.itc_dim > 0``.
    ``mlm_delay`` / ``mlm_ramp``: a schedule of the MLM weight, beyond the paper (which weights
    MLM 1 throughout, the default 0 / 0): 0 for the first ``mlm_delay`` optimizer steps, then
    rising linearly to 1 over ``mlm_ramp`` steps (:func:`vlparse.objectives.mlm.ramp_weight`).
    With the separate ITM pass, the masked pass (MLM and MFR) is not run while the weight is 0,
    so MFR waits with MLM and those steps cost about a quarter less.
    On the quickstart world, held-out ITM left chance at about step 1,800 with all objectives
    from step 0 and at about 450 with ITM alone; delaying MLM by 300 steps gave 0.62 at step
    1,000 against 0.50 (the quickstart config; ``docs/results/itm_learnability/session6``).
    ``itm_negatives``: where the unmatched captions come from. ``"dataset"`` (default): a caption
    of a random other image of the whole data set. ``"batch"`` (the paper does not say which):
    matched captions of the other images of the same group of ``itm_negative_group`` consecutive
    images of the batch, lent so that every caption of the group appears once beside its own
    image and once beside another (:func:`vlparse.data.pretrain.lend_batch_negatives`). The
    texts then carry no label information at all within a batch, and held-out ITM (measured, as
    always, against random captions of the data set) is learnt in fewer steps (see
    ``docs/results/itm_learnability/session7``). With DDP or gradient accumulation the
    per-process micro-batch must be a multiple of the group, so that no group is split.
    """

    mlm_prob: float = 0.15
    mlm_delay: int = 0
    mlm_ramp: int = 0
    itm_pass: Literal["separate", "shared"] = "separate"
    itm_negatives: Literal["dataset", "batch"] = "dataset"
    itm_negative_group: int = 8
    num_pos: int = 2
    num_neg: int = 2
    vla_weight: float = 0.1
    ipot_beta: float = 0.5
    ipot_iters: int = 50
    mfr_mode: Literal["attention", "random", "off"] = "attention"
    mfr_k: int = 7
    mfr_ratio: float | None = None
    mfr_reduction: Literal["mean_channel", "sum"] = "mean_channel"
    lambda_itm: float = 1.0
    lambda_mfr: float = 0.01
    lambda_itc: float = 0.0
    itc_temperature: float = 0.07


@dataclass
class DataConfig:
    """Which data sets of the manifest to pre-train on, and how to treat bad input.

    ``on_error``: ``"skip"`` replaces a missing or corrupt image with another sample, counts it
    and names it in the log; ``"raise"`` makes it fatal. A run fails when more than
    ``max_bad_fraction`` of the images seen are bad.

    ``verify_negatives``: ``"auto"`` checks the unmatched ITM captions of training and of the
    held-out evaluation against the world's ground truth when the manifest names one (the scene
    world's ``generator.scenes``) and draws again any that is true of the image or ambiguous
    (:mod:`vlparse.data.synthetic.truth`: about 7 % of random draws); ``"off"`` draws them at
    random as the paper does. Real data sets have no ground truth, so ``"auto"`` is ``"off"``
    there.
    """

    train_sets: list[str] = field(default_factory=lambda: ["coco", "vg"])
    train_splits: list[str] = field(default_factory=lambda: ["train", "restval"])
    val_set: str = "coco"
    val_split: str = "val"
    num_workers: int = 2
    on_error: Literal["skip", "raise"] = "skip"
    max_bad_fraction: float = 0.01
    verify_negatives: Literal["auto", "off"] = "auto"


@dataclass
class OptimConfig:
    lr: float = 5e-5
    visual_lr: float = 5e-6
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 500
    decay_epochs: list[float] = field(default_factory=lambda: [25, 35])
    decay_factor: float = 0.1
    grad_clip: float | None = 1.0


@dataclass
class TrainConfig:
    """The loop. ``batch_size`` counts images per optimizer step over all processes (each image
    comes with ``num_pos + num_neg`` texts); ``grad_accum`` splits it into micro-batches.
    ``max_minutes`` ends the run (checkpoint, evaluation, summary) after that much training time,
    whatever ``epochs`` or ``max_steps`` say."""

    epochs: float = 40
    max_steps: int | None = None
    max_minutes: float | None = None
    batch_size: int = 2048
    grad_accum: int = 1
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 1000
    keep_checkpoints: int = 3
    eval_every: int = 0
    eval_images: int = 500
    progress: bool = True


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    objectives: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        validate(self)


FINETUNE_TASKS = ("retrieval", "vqa", "nlvr2", "snli-ve")
"""Names of the fine-tuning tasks (``vlparse finetune TASK``)."""


@dataclass
class TaskConfig:
    """What a fine-tuning task needs beyond the model, the data sets and the loop.

    ``name``: one of :data:`FINETUNE_TASKS`. ``num_neg``: retrieval, unaligned captions per image
    taken from the other images of the mini-batch (``B`` aligned + ``B * num_neg`` unaligned
    pairs per step). ``itm_head_init``: retrieval, start the matching head from the pre-trained
    ITM head (with ``--init``). ``num_answers``: VQA, size of the answer vocabulary (most frequent
    training answers). ``head_lr_mult``: the task head's learning rate is ``optim.lr`` times this.
    ``eval_batch_pairs``: image-text pairs per forward pass in evaluation. ``eval_max_images``:
    images of ``data.val_split`` used by the evaluation that runs during / after training
    (0 = all). ``rerank_k``: retrieval, 0 = full ranking; ``K > 0`` = only the top ``K``
    candidates of the cheap unimodal score are re-scored by the full model.
    """

    name: Literal["retrieval", "vqa", "nlvr2", "snli-ve"] = "retrieval"
    num_neg: int = 3
    itm_head_init: bool = True
    num_answers: int = 3129
    head_lr_mult: float = 1.0
    eval_batch_pairs: int = 1024
    eval_max_images: int = 0
    rerank_k: int = 0


def _finetune_data() -> DataConfig:
    return DataConfig(
        train_sets=["flickr30k"], train_splits=["train"], val_set="flickr30k", val_split="val"
    )


@dataclass
class FinetuneConfig:
    """A fine-tuning recipe: the task, the model (used when starting from scratch; with
    ``--init`` the pre-trained run's model section replaces it), the data sets of the manifest
    (``data.train_sets`` x ``data.train_splits`` to train, ``data.val_set`` / ``val_split`` to
    evaluate), the optimizer and the loop (``train.batch_size`` counts images, or examples).

    ``model_from`` names a config (built-in such as ``paper``/``tiny`` or a YAML path) whose
    ``model`` section is the starting point; the recipe's own ``model`` keys override it. It is
    resolved by :func:`load_config` and kept only as a record.
    """

    model_from: str | None = "paper"
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=_finetune_data)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        validate_finetune(self)


# --------------------------------------------------------------------------- construction


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert YAML/CLI values (int -> float,
    list -> list of the element type, dict -> nested dataclass)."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} is not {' or '.join(_type_name(a) for a in args)}")
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads off/on/no/yes as booleans
            value = "on" if value else "off"
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (elem,) = get_args(tp)
        return [_coerce(v, elem, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys by name."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            scope = f" of '{where}'" if where else ""
            raise ConfigError(f"unknown key '{path}'; valid keys{scope}: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts and lists (YAML/JSON-ready)."""
    return dataclasses.asdict(cfg)


def _shared_checks(cfg: PretrainConfig | FinetuneConfig) -> list[tuple[bool, str]]:
    """Checks of the parts that pre-training and fine-tuning configs have in common."""
    tr, v, text = cfg.train, cfg.model.visual, cfg.model.text
    return [
        (tr.batch_size >= 1 and tr.grad_accum >= 1, "train.batch_size and grad_accum must be >= 1"),
        (
            tr.batch_size % tr.grad_accum == 0,
            "train.batch_size must be divisible by train.grad_accum",
        ),
        (v.image_size > 0 and v.window_size > 0, "model.visual sizes must be positive"),
        (
            text.hidden_size % text.num_heads == 0,
            "model.text.hidden_size must be divisible by model.text.num_heads",
        ),
        (text.initializer_range > 0, "model.text.initializer_range must be > 0"),
        (0.0 <= cfg.data.max_bad_fraction <= 1.0, "data.max_bad_fraction must be in [0, 1]"),
    ]


def _raise_failed(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def validate(cfg: PretrainConfig) -> None:
    """Cross-field checks that types alone cannot express."""
    o = cfg.objectives
    _raise_failed([
        (0.0 < o.mlm_prob < 1.0, "objectives.mlm_prob must be in (0, 1)"),
        (o.mlm_delay >= 0 and o.mlm_ramp >= 0, "objectives.mlm_delay and mlm_ramp must be >= 0"),
        (o.itm_negative_group >= 2, "objectives.itm_negative_group must be >= 2"),
        (
            o.itm_negatives == "dataset"
            or (cfg.train.batch_size // cfg.train.grad_accum) % o.itm_negative_group == 0,
            f"objectives.itm_negatives='batch' needs train.batch_size / train.grad_accum "
            f"({cfg.train.batch_size} / {cfg.train.grad_accum}) to be a multiple of "
            f"objectives.itm_negative_group ({o.itm_negative_group})",
        ),
        (o.num_pos >= 1 and o.num_neg >= 0, "objectives.num_pos >= 1 and num_neg >= 0"),
        (o.mfr_k >= 1, "objectives.mfr_k must be >= 1"),
        (o.mfr_ratio is None or 0.0 < o.mfr_ratio <= 1.0, "objectives.mfr_ratio must be in (0, 1]"),
        (o.ipot_iters >= 1 and o.ipot_beta > 0, "objectives.ipot_iters >= 1, ipot_beta > 0"),
        (
            o.lambda_itc == 0 or cfg.model.itc_dim > 0,
            "objectives.lambda_itc > 0 needs model.itc_dim > 0 (the contrastive projections)",
        ),
        (o.itc_temperature > 0, "objectives.itc_temperature must be > 0"),
        *_shared_checks(cfg),
    ])


def validate_finetune(cfg: FinetuneConfig) -> None:
    """Cross-field checks of a fine-tuning recipe."""
    t = cfg.task
    _raise_failed([
        (t.num_neg >= 0, "task.num_neg must be >= 0"),
        (t.num_answers >= 1, "task.num_answers must be >= 1"),
        (t.head_lr_mult > 0, "task.head_lr_mult must be > 0"),
        (t.eval_batch_pairs >= 1, "task.eval_batch_pairs must be >= 1"),
        (t.eval_max_images >= 0, "task.eval_max_images must be >= 0 (0 = all)"),
        (t.rerank_k >= 0, "task.rerank_k must be >= 0 (0 = full ranking)"),
        *_shared_checks(cfg),
    ])


# --------------------------------------------------------------------------- YAML and overrides


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


def model_config(name_or_path: str | Path, overrides: list[str] | None = None) -> ModelConfig:
    """The ``model`` section of a named or file config."""
    return load_config(name_or_path, overrides).model
