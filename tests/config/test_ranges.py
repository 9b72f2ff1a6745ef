"""Every config value is checked where the config is made: types, ranges and choices, from a
YAML file, an override or Python alike, with the dotted key, the value and what is allowed."""

from __future__ import annotations

import dataclasses
import types
import typing

import pytest

import vlparse.config as C
from vlparse.config import ConfigError, FieldError, FinetuneConfig, load_config
from vlparse.config.ranges import RANGE, Range

# (override, key in the message, what the message says): values that must be refused.
# Written by hand from the meaning of each field, not read from the declarations.
OUT_OF_RANGE = [
    ("optim.lr=-1", "optim.lr", "-1.0 is out of range; must be > 0"),
    ("optim.lr=0", "optim.lr", "0.0 is out of range; must be > 0"),
    ("optim.visual_lr=-1e-5", "optim.visual_lr", "must be > 0"),
    ("optim.weight_decay=-0.1", "optim.weight_decay", "must be >= 0"),
    ("optim.betas=[0.9, 1.0]", "optim.betas[1]", "1.0 is out of range; must be in [0, 1)"),
    ("optim.betas=[-0.1, 0.9]", "optim.betas[0]", "must be in [0, 1)"),
    ("optim.eps=0", "optim.eps", "must be > 0"),
    ("optim.warmup_steps=-1", "optim.warmup_steps", "-1 is out of range; must be >= 0"),
    ("optim.decay_epochs=[-1]", "optim.decay_epochs[0]", "must be >= 0"),
    ("optim.decay_factor=0", "optim.decay_factor", "must be in (0, 1]"),
    ("optim.decay_factor=2", "optim.decay_factor", "must be in (0, 1]"),
    ("optim.grad_clip=0", "optim.grad_clip", "must be > 0"),
    ("train.max_steps=-5", "train.max_steps", "-5 is out of range; must be >= 1"),
    ("train.max_steps=0", "train.max_steps", "must be >= 1"),
    ("train.epochs=0", "train.epochs", "0.0 is out of range; must be > 0"),
    ("train.epochs=-1", "train.epochs", "must be > 0"),
    ("train.max_minutes=0", "train.max_minutes", "must be > 0"),
    ("train.batch_size=0", "train.batch_size", "must be >= 1"),
    ("train.grad_accum=0", "train.grad_accum", "must be >= 1"),
    ("train.seed=-1", "train.seed", "must be in [0, 4294967296)"),
    ("train.log_every=0", "train.log_every", "0 is out of range; must be >= 1"),
    ("train.ckpt_every=-1", "train.ckpt_every", "-1 is out of range; must be >= 0"),
    ("train.keep_checkpoints=-1", "train.keep_checkpoints", "must be >= 0"),
    ("train.eval_every=-1", "train.eval_every", "must be >= 0"),
    ("train.eval_images=0", "train.eval_images", "must be >= 1"),
    ("data.num_workers=-1", "data.num_workers", "must be >= 0"),
    ("data.max_bad_fraction=1.5", "data.max_bad_fraction", "must be in [0, 1]"),
    ("data.max_bad_fraction=-0.01", "data.max_bad_fraction", "must be in [0, 1]"),
    ("model.itc_dim=-1", "model.itc_dim", "must be >= 0"),
    ("model.visual.image_size=0", "model.visual.image_size", "must be >= 1"),
    ("model.visual.window_size=0", "model.visual.window_size", "must be >= 1"),
    ("model.visual.embed_dim=0", "model.visual.embed_dim", "must be >= 1"),
    ("model.visual.num_heads=[0]", "model.visual.num_heads[0]", "must be >= 1"),
    ("model.visual.patch_size=0", "model.visual.patch_size", "must be >= 1"),
    ("model.visual.drop_path_rate=1", "model.visual.drop_path_rate", "must be in [0, 1)"),
    ("model.text.vocab_size=-1", "model.text.vocab_size", "must be >= 0"),
    ("model.text.hidden_size=0", "model.text.hidden_size", "must be >= 1"),
    ("model.text.num_layers=0", "model.text.num_layers", "must be >= 1"),
    ("model.text.num_heads=0", "model.text.num_heads", "must be >= 1"),
    ("model.text.intermediate_size=0", "model.text.intermediate_size", "must be >= 1"),
    ("model.text.dropout=-0.1", "model.text.dropout", "must be in [0, 1)"),
    ("model.text.attention_dropout=1.0", "model.text.attention_dropout", "must be in [0, 1)"),
    ("model.text.max_text_len=1", "model.text.max_text_len", "must be >= 2"),
    ("model.text.layer_norm_eps=0", "model.text.layer_norm_eps", "must be > 0"),
    ("model.text.initializer_range=0", "model.text.initializer_range", "must be > 0"),
    ("objectives.mlm_prob=0", "objectives.mlm_prob", "must be in (0, 1)"),
    ("objectives.mlm_prob=1", "objectives.mlm_prob", "must be in (0, 1)"),
    ("objectives.mlm_delay=-1", "objectives.mlm_delay", "must be >= 0"),
    ("objectives.mlm_ramp=-1", "objectives.mlm_ramp", "must be >= 0"),
    ("objectives.itm_negative_group=1", "objectives.itm_negative_group", "must be >= 2"),
    ("objectives.num_pos=0", "objectives.num_pos", "must be >= 1"),
    ("objectives.num_neg=-1", "objectives.num_neg", "must be >= 0"),
    ("objectives.vla_weight=-0.1", "objectives.vla_weight", "must be >= 0"),
    ("objectives.ipot_beta=0", "objectives.ipot_beta", "must be > 0"),
    ("objectives.ipot_iters=0", "objectives.ipot_iters", "must be >= 1"),
    ("objectives.mfr_k=0", "objectives.mfr_k", "must be >= 1"),
    ("objectives.mfr_ratio=0", "objectives.mfr_ratio", "must be in (0, 1]"),
    ("objectives.mfr_ratio=1.5", "objectives.mfr_ratio", "must be in (0, 1]"),
    ("objectives.lambda_itm=-1", "objectives.lambda_itm", "must be >= 0"),
    ("objectives.lambda_mfr=-0.01", "objectives.lambda_mfr", "must be >= 0"),
    ("objectives.lambda_itc=-1", "objectives.lambda_itc", "must be >= 0"),
    ("objectives.itc_temperature=0", "objectives.itc_temperature", "must be > 0"),
    ("optim.lr=.nan", "optim.lr", "nan is out of range; must be > 0"),
]

# the same for the task sections, each with a recipe of its task
TASK_OUT_OF_RANGE = [
    ("retrieval_world", "task.head_lr_mult=0", "task.head_lr_mult", "must be > 0"),
    ("retrieval_world", "task.eval_batch_pairs=0", "task.eval_batch_pairs", "must be >= 1"),
    ("retrieval_world", "task.eval_max_images=-1", "task.eval_max_images", "must be >= 0"),
    ("retrieval_world", "task.num_neg=-1", "task.num_neg", "must be >= 0"),
    ("retrieval_world", "task.rerank_k=-1", "task.rerank_k", "must be >= 0"),
    ("vqa_world", "task.num_answers=0", "task.num_answers", "must be >= 1"),
    ("nlvr2_world", "task.head_lr_mult=-1", "task.head_lr_mult", "must be > 0"),
    ("snli_ve_world", "task.eval_batch_pairs=0", "task.eval_batch_pairs", "must be >= 1"),
]

WRONG_TYPE_OR_CHOICE = [
    ("train.batch_size=abc", "train.batch_size", "expected an integer, got 'abc'"),
    ("train.batch_size=2.5", "train.batch_size", "expected an integer, got 2.5"),
    ("optim.lr=fast", "optim.lr", "expected a number, got 'fast'"),
    ("train.progress=maybe", "train.progress", "expected true or false, got 'maybe'"),
    ("optim.betas=0.9", "optim.betas", "expected a list, got 0.9"),
    ("model.visual=5", "model.visual", "expected a mapping, got 5"),
    ("model.visual.pretrained=3", "model.visual.pretrained", "3 is not str or null"),
    ("model.visual.kind=vit", "model.visual.kind", "'vit' is not one of 'swin', 'resnet', 'patch'"),
    ("objectives.mfr_mode=sometimes", "objectives.mfr_mode", "is not one of"),
    ("objectives.itm_negatives=hard", "objectives.itm_negatives", "is not one of"),
    ("train.precision=fp16", "train.precision", "is not one of 'auto', 'fp32', 'bf16'"),
    ("model.family=vit", "model.family", "'vit' is not one of 'visual_parsing'"),
]

CROSS_FIELD = [
    (["optim.decay_epochs=[35, 25]"], "optim.decay_epochs", "[35.0, 25.0] must be ascending"),
    (["optim.decay_epochs=[5, 5]"], "optim.decay_epochs", "must be ascending"),
    (["optim.betas=[0.9, 0.99, 0.999]"], "optim.betas", "must be two numbers"),
    (["train.batch_size=10", "train.grad_accum=3"], "train.batch_size", "not divisible by"),
    (["model.text.num_heads=5"], "model.text.hidden_size", "128 is not divisible by num_heads"),
    (["model.visual.num_heads=[2, 4]"], "model.visual.num_heads", "has 2 stages, depths"),
    (["objectives.itm_negatives=batch", "train.batch_size=12"], "objectives.itm_negatives",
     "multiple of objectives.itm_negative_group"),
    (["objectives.lambda_itc=1"], "objectives.lambda_itc", "needs model.itc_dim > 0"),
]


@pytest.mark.parametrize(("override", "key", "says"), OUT_OF_RANGE + WRONG_TYPE_OR_CHOICE)
def test_a_wrong_value_is_refused_naming_key_value_and_range(override, key, says):
    with pytest.raises(FieldError) as e:
        load_config("tiny", [override])
    assert e.value.key == key
    assert str(e.value).startswith(f"override '{override}': {key}: ")
    assert says in str(e.value)


@pytest.mark.parametrize(("recipe", "override", "key", "says"), TASK_OUT_OF_RANGE)
def test_a_wrong_task_value_is_refused(recipe, override, key, says):
    with pytest.raises(FieldError) as e:
        load_config(recipe, [override], cls=FinetuneConfig)
    assert e.value.key == key and says in str(e.value)
    assert str(e.value).startswith(f"override '{override}': {key}: ")


@pytest.mark.parametrize(("overrides", "key", "says"), CROSS_FIELD)
def test_values_that_do_not_go_together_are_refused(overrides, key, says):
    with pytest.raises(FieldError) as e:
        load_config("tiny", overrides)
    assert e.value.key == key and says in str(e.value)
    assert f"override '{overrides[-1]}'" in str(e.value)


@pytest.mark.parametrize("override", [
    "train.ckpt_every=0", "train.eval_every=0", "train.max_steps=1", "train.max_steps=null",
    "train.max_minutes=0.5", "train.epochs=0.25", "optim.warmup_steps=0", "optim.decay_epochs=[]",
    "optim.decay_epochs=[0, 0.5]", "optim.grad_clip=null", "optim.decay_factor=1",
    "optim.betas=[0, 0.5]", "data.max_bad_fraction=0", "data.max_bad_fraction=1",
    "data.num_workers=0", "objectives.mfr_ratio=1", "objectives.num_neg=0",
    "objectives.lambda_mfr=0", "model.text.dropout=0", "model.visual.drop_path_rate=0",
    "model.text.vocab_size=0", "train.seed=4294967295", "train.max_steps=1e3",
])
def test_values_on_the_edge_of_their_range_are_accepted(override):
    load_config("tiny", [override])


def test_python_construction_validates_too():
    with pytest.raises(ConfigError) as e:
        C.OptimConfig(lr=-1)
    assert str(e.value) == "OptimConfig.lr: -1.0 is out of range; must be > 0"
    with pytest.raises(ConfigError, match=r"^TrainConfig\.log_every: 0 is out of range"):
        C.TrainConfig(log_every=0)
    with pytest.raises(ConfigError, match=r"^PretrainConfig\.train\.epochs: 0\.0 is out"):
        C.PretrainConfig(train={"epochs": 0})
    with pytest.raises(ConfigError, match=r"^TextConfig\.hidden_size: 768 is not divisible"):
        C.TextConfig(num_heads=7)
    with pytest.raises(ConfigError, match=r"^VisualConfig\.image_size: expected an integer"):
        C.VisualConfig(image_size="96")
    with pytest.raises(ConfigError, match=r"^DataConfig\.on_error: 'ignore' is not one of"):
        C.DataConfig(on_error="ignore")
    # and coerces as YAML would: int -> float, mapping -> nested config
    assert C.OptimConfig(lr=1).lr == 1.0 and isinstance(C.OptimConfig(lr=1).lr, float)
    cfg = C.PretrainConfig(model={"text": {"num_layers": 2}})
    assert isinstance(cfg.model.text, C.TextConfig) and cfg.model.text.num_layers == 2
    # dataclasses.replace builds a new config, checked as well
    with pytest.raises(ConfigError, match="max_steps"):
        dataclasses.replace(C.TrainConfig(), max_steps=-5)


def test_validate_checks_a_config_changed_after_construction():
    cfg = load_config("tiny")
    C.validate(cfg)
    cfg.optim.lr = -1
    with pytest.raises(ConfigError, match=r"^PretrainConfig\.optim\.lr: -1\.0 is out of range"):
        C.validate(cfg)


def _config_classes() -> list[type]:
    return [c for c in vars(C).values()
            if isinstance(c, type) and issubclass(c, C.Config) and c is not C.Config]


def _numbers_in(tp) -> bool:
    """Whether a field of this annotation holds numbers (int or float, maybe in a list or
    optional), bool excluded."""
    if tp in (int, float):
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType, list):
        return any(_numbers_in(a) for a in typing.get_args(tp))
    return False


def test_every_numeric_field_declares_its_range():
    classes = _config_classes()
    assert len(classes) >= 14
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in classes
        for f in dataclasses.fields(cls)
        if _numbers_in(typing.get_type_hints(cls)[f.name]) and RANGE not in f.metadata
    ]
    assert missing == []


def _sections(cls: type, prefix: str = ""):
    """(dotted key, field) of every field of ``cls`` and of its nested configs."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _sections(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


def _just_outside(rng: Range, is_int: bool) -> float:
    if rng.gt is not None:
        return rng.gt
    if rng.ge is not None:
        return rng.ge - 1 if is_int else rng.ge - 1e-3
    return rng.lt if rng.lt is not None else rng.le + (1 if is_int else 1e-3)


SWEEP = [
    (key, f) for key, f in _sections(C.PretrainConfig)
    if RANGE in f.metadata
] + [
    (f"task.{f.name}", f) for cls in (C.RetrievalTaskConfig, C.VQATaskConfig)
    for f in dataclasses.fields(cls) if RANGE in f.metadata
]


@pytest.mark.parametrize(("key", "field"), SWEEP, ids=[k for k, _ in SWEEP])
def test_every_declared_range_is_enforced_from_an_override(key, field):
    """For each range as declared: the first value outside it is refused by name."""
    tp = str(field.type)
    bad = _just_outside(field.metadata[RANGE], "int" in tp and "float" not in tp)
    value = f"[{bad}]" if "list" in tp else repr(bad)
    recipe = "vqa_world" if field.name == "num_answers" else "retrieval_world"
    cls, name = (FinetuneConfig, recipe) if key.startswith("task.") else (C.PretrainConfig, "tiny")
    with pytest.raises(FieldError) as e:
        load_config(name, [f"{key}={value}"], cls=cls)
    assert e.value.key == (f"{key}[0]" if "list" in tp else key)
    assert "out of range; must be" in str(e.value)


def test_a_stream_of_shards_needs_its_folder_and_passes_over_images():
    with pytest.raises(FieldError, match="data.shards"):
        C.DataConfig(format="shards")
    with pytest.raises(FieldError, match="epoch_unit"):
        C.DataConfig(format="shards", shards="shards/", epoch_unit="pairs")
    assert C.DataConfig(format="shards", shards="shards/").epoch_unit == "images"
