"""Discriminated unions: the task section picked by ``task.name``, the model and objectives
sections picked by ``model.family``, with helpful messages for a key of another member."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import pytest

from vlparse.config import (
    FINETUNE_TASKS,
    Config,
    FieldError,
    FinetuneConfig,
    ModelConfig,
    NLVR2TaskConfig,
    ObjectiveConfig,
    PretrainConfig,
    RetrievalTaskConfig,
    VQATaskConfig,
    from_dict,
    load_config,
    ranged,
    to_dict,
)
from vlparse.config import families as fam


def test_task_name_picks_the_task_class():
    assert FINETUNE_TASKS == ("retrieval", "vqa", "nlvr2", "snli-ve", "caption", "grounding",
                              "refexp", "detection")
    picked = {name: type(from_dict(FinetuneConfig, {"task": {"name": name}}).task).__name__
              for name in FINETUNE_TASKS}
    assert picked == {"retrieval": "RetrievalTaskConfig", "vqa": "VQATaskConfig",
                      "nlvr2": "NLVR2TaskConfig", "snli-ve": "SNLIVETaskConfig",
                      "caption": "CaptionTaskConfig", "grounding": "GroundingTaskConfig",
                      "refexp": "RefexpTaskConfig", "detection": "DetectionTaskConfig"}
    assert type(FinetuneConfig().task) is RetrievalTaskConfig  # the default
    assert type(from_dict(FinetuneConfig, {"task": {"num_neg": 1}}).task) is RetrievalTaskConfig
    vqa = from_dict(FinetuneConfig, {"task": {"name": "vqa", "num_answers": 10}}).task
    assert (vqa.num_answers, vqa.head_lr_mult) == (10, 1.0)
    assert not hasattr(vqa, "num_neg") and not hasattr(vqa, "rerank_k")
    # in Python: a mapping or an instance
    assert type(FinetuneConfig(task={"name": "nlvr2"}).task) is NLVR2TaskConfig
    assert FinetuneConfig(task=VQATaskConfig(num_answers=5)).task.num_answers == 5


def test_a_key_of_another_task_says_which_task_has_it():
    with pytest.raises(FieldError) as e:
        load_config("vqa_world", ["task.rerank_k=8"], cls=FinetuneConfig)
    assert str(e.value) == (
        "override 'task.rerank_k=8': task.rerank_k: a key of task.name='retrieval', not of "
        "task.name='vqa'; valid keys of 'task' for task.name='vqa': name, head_lr_mult, "
        "eval_batch_pairs, eval_max_images, num_answers, soft_targets"
    )
    with pytest.raises(FieldError, match=r"task\.num_answers: a key of task\.name='vqa', not of "
                                         r"task\.name='nlvr2'"):
        from_dict(FinetuneConfig, {"task": {"name": "nlvr2", "num_answers": 3}})
    with pytest.raises(FieldError, match=r"task\.num_negs: unknown key; valid keys of 'task': "
                                         r"name, head_lr_mult, .*, num_neg, itm_head_init"):
        load_config("retrieval", ["task.num_negs=2"], cls=FinetuneConfig)


def test_a_wrong_task_name_lists_the_tasks():
    with pytest.raises(FieldError) as e:
        load_config("retrieval_world", ["task.name=captioning"], cls=FinetuneConfig)
    assert str(e.value) == ("override 'task.name=captioning': task.name: 'captioning' is not one "
                            "of 'retrieval', 'vqa', 'nlvr2', 'snli-ve', 'caption', 'grounding', "
                            "'refexp', 'detection'")
    with pytest.raises(FieldError, match=r"^FinetuneConfig\.task: expected RetrievalTaskConfig or "
                                         r"VQATaskConfig or NLVR2TaskConfig or SNLIVETaskConfig or "
                                         r"CaptionTaskConfig"):
        FinetuneConfig(task=ModelConfig())
    with pytest.raises(FieldError, match=r"task: expected a mapping, got 'vqa'"):
        from_dict(FinetuneConfig, {"task": "vqa"})


def test_the_model_family_tags_its_classes():
    assert fam.family_names()[0] == "visual_parsing"
    for name, family in fam.FAMILIES.items():
        assert family.model().family == name
        assert issubclass(family.model, Config) and issubclass(family.objectives, Config)
    cfg = load_config("tiny")
    assert cfg.model.family == "visual_parsing" and type(cfg.objectives) is ObjectiveConfig
    assert to_dict(cfg)["model"]["family"] == "visual_parsing"


# A second family, made up for the test: what a real one adds in its own module.
@dataclass
class ToyModelConfig(Config):
    family: Literal["toy"] = "toy"
    name: str = "toy"
    width: int = ranged(8, ge=1)


@dataclass
class ToyObjectiveConfig(Config):
    weight: float = ranged(1.0, ge=0)


@pytest.fixture
def two_families(monkeypatch):
    families = {**fam.FAMILIES, "toy": fam.Family(ToyModelConfig, ToyObjectiveConfig)}
    monkeypatch.setattr(fam, "FAMILIES", MappingProxyType(families))


def test_model_family_picks_the_model_and_objectives_classes(two_families):
    cfg = from_dict(PretrainConfig, {"model": {"family": "toy", "width": 4},
                                     "objectives": {"weight": 0.5}})
    assert type(cfg.model) is ToyModelConfig and cfg.model.width == 4
    assert type(cfg.objectives) is ToyObjectiveConfig and cfg.objectives.weight == 0.5
    assert from_dict(PretrainConfig, to_dict(cfg)) == cfg
    # the objectives default to the family's, in Python as from a mapping
    assert type(PretrainConfig(model=ToyModelConfig()).objectives) is ToyObjectiveConfig
    assert type(from_dict(PretrainConfig, {"model": {"family": "toy"}}).objectives) is \
        ToyObjectiveConfig
    assert type(PretrainConfig().model) is ModelConfig  # the first family stays the default
    assert type(from_dict(FinetuneConfig, {"model": {"family": "toy"}}).model) is ToyModelConfig


def test_model_family_refuses_keys_and_sections_of_another_family(two_families):
    with pytest.raises(FieldError, match=r"^PretrainConfig\.model\.visual: a key of "
                                         r"model\.family="
                                         r"'visual_parsing', not of model\.family='toy'; valid "
                                         r"keys of 'model' for model\.family='toy': family, name, "
                                         r"width$"):
        from_dict(PretrainConfig, {"model": {"family": "toy", "visual": {}}})
    with pytest.raises(FieldError, match=r"objectives\.mlm_prob: unknown key; valid keys of "
                                         r"'objectives': weight"):
        from_dict(PretrainConfig, {"model": {"family": "toy"}, "objectives": {"mlm_prob": 0.1}})
    with pytest.raises(FieldError, match=r"objectives: expected ToyObjectiveConfig, got "
                                         r"ObjectiveConfig"):
        PretrainConfig(model=ToyModelConfig(), objectives=ObjectiveConfig())
    with pytest.raises(FieldError, match=r"model\.family: 'vit' is not one of 'visual_parsing', "
                                         r"'fiber', 'toy'"):
        load_config("tiny", ["model.family=vit"])
    with pytest.raises(FieldError, match=r"^override 'model\.width=0': model\.width: 0 is out of "
                                         r"range; must be >= 1"):
        load_config(None, ["model.family=toy", "model.width=0"])


def test_changing_the_task_copies_only_the_common_keys():
    """What a consumer does to switch a recipe's task: the common keys carry over."""
    r = load_config("retrieval_world", cls=FinetuneConfig)
    common = {f.name for f in dataclasses.fields(VQATaskConfig)} & set(to_dict(r.task))
    task = VQATaskConfig(**{k: v for k, v in to_dict(r.task).items() if k in common and
                            k != "name"})
    assert task.eval_batch_pairs == r.task.eval_batch_pairs == 512
