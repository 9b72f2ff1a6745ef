"""YAML files, ``base`` chains, overrides, built-in configs and where errors point to."""

from __future__ import annotations

import pickle
import textwrap

import pytest
import yaml

from vlparse.config import (
    ConfigError,
    FieldError,
    FinetuneConfig,
    PretrainConfig,
    apply_overrides,
    builtin_configs,
    builtin_recipes,
    from_dict,
    load_config,
    to_dict,
)


def _write(path, text: str):
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_builtin_configs_load_and_validate():
    names = builtin_configs()
    assert {"tiny", "ablation", "paper", "quickstart"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert isinstance(cfg, PretrainConfig)
    paper = load_config("paper")
    assert paper.model.visual.arch == "swin_base_patch4_window12_384"
    assert paper.model.visual.image_size == 384 and paper.model.visual.window_size == 12
    assert paper.model.text.num_layers == 12 and paper.model.text.max_text_len == 40
    assert paper.optim.lr == 5e-5 and paper.optim.visual_lr == 5e-6
    assert paper.optim.decay_epochs == [25, 35] and paper.train.epochs == 40
    assert paper.objectives.lambda_itm == 1.0 and paper.objectives.lambda_mfr == 0.01
    assert paper.objectives.mfr_k == 7 and paper.objectives.vla_weight == 0.1


def test_builtin_recipes_load_with_their_task_class():
    from vlparse.config import (
        DetectionTaskConfig,
        GroundingTaskConfig,
        NLVR2TaskConfig,
        RefexpTaskConfig,
        RetrievalTaskConfig,
        SNLIVETaskConfig,
        VQATaskConfig,
    )
    from vlparse.config.finetune import CaptionTaskConfig

    classes = {"retrieval": RetrievalTaskConfig, "vqa": VQATaskConfig, "nlvr2": NLVR2TaskConfig,
               "snli_ve": SNLIVETaskConfig, "grounding": GroundingTaskConfig,
               "refexp": RefexpTaskConfig, "detection": DetectionTaskConfig,
               "caption": CaptionTaskConfig}
    recipes = builtin_recipes()
    # Visual Parsing: 3 sizes x 4 tasks; FIBER: 2 x 4, 2 x 3 box tasks, 2 caption
    assert len(recipes) == 28
    for name in recipes:
        cfg = load_config(name, cls=FinetuneConfig)
        prefix = next(p for p in classes if name.startswith(p))
        assert type(cfg.task) is classes[prefix], name


@pytest.mark.parametrize("name", builtin_configs())
def test_round_trip_of_builtin_configs(name):
    cfg = load_config(name)
    assert from_dict(PretrainConfig, to_dict(cfg)) == cfg
    # as a run folder keeps it: through YAML text
    assert from_dict(PretrainConfig, yaml.safe_load(yaml.safe_dump(to_dict(cfg)))) == cfg


@pytest.mark.parametrize("name", builtin_recipes())
def test_round_trip_of_builtin_recipes(name):
    cfg = load_config(name, cls=FinetuneConfig)
    again = from_dict(FinetuneConfig, yaml.safe_load(yaml.safe_dump(to_dict(cfg))))
    assert again == cfg and type(again.task) is type(cfg.task)


def test_base_chain_and_overrides():
    cfg = load_config("quickstart", ["train.batch_size=8", "objectives.mfr_mode=random"])
    assert cfg.model.name == "tiny"  # inherited from the base
    assert cfg.train.batch_size == 8 and cfg.objectives.mfr_mode == "random"
    assert apply_overrides({"a": {"b": 1}}, ["a.c=[1, 2]", "d=1e-4"]) == {
        "a": {"b": 1, "c": [1, 2]}, "d": 1e-4}


def test_unknown_key_names_file_line_and_valid_keys(tmp_path):
    child = _write(tmp_path / "child.yaml", """
        base: tiny
        model:
          text:
            num_layers: 2
          visul:
            arch: x
        """)
    with pytest.raises(FieldError) as e:
        load_config(child)
    assert str(e.value) == (
        f"{child}:5: model.visul: unknown key; valid keys of 'model': "
        "family, name, visual, text, itc_dim"
    )
    with pytest.raises(ConfigError, match=r"^override 'model\.visul\.arch=x': model\.visul: "):
        load_config("tiny", ["model.visul.arch=x"])
    with pytest.raises(ConfigError, match=r":1: modle: unknown key; valid keys: model, "):
        load_config(_write(tmp_path / "top.yaml", "modle: {}\n"))


def test_bad_value_names_the_line_of_the_file_that_set_it(tmp_path):
    parent = _write(tmp_path / "parent.yaml", """
        base: tiny
        optim:
          warmup_steps: 5
          lr: -1
        """)
    child = _write(tmp_path / "child.yaml", """
        # a comment line
        base: parent.yaml
        train:
          seed: 3
        """)
    message = "optim.lr: -1.0 is out of range; must be > 0"
    with pytest.raises(ConfigError) as e:
        load_config(child)
    assert str(e.value) == f"{parent}:4: {message}"
    fixed = _write(tmp_path / "fixed.yaml", "base: parent.yaml\noptim:\n  lr: 0.1\n")
    assert load_config(fixed).optim.lr == 0.1
    _write(child, "base: parent.yaml\nmodel:\n  visual:\n    depths: [2, 0]\n")
    with pytest.raises(ConfigError) as e:
        load_config(child)
    assert str(e.value).startswith(f"{child}:4: model.visual.depths[1]: 0 is out of range")


def test_override_errors_name_the_override_and_cross_checks_every_place():
    with pytest.raises(ConfigError) as e:
        load_config("tiny", ["optim.lr=-1"])
    assert str(e.value) == "override 'optim.lr=-1': optim.lr: -1.0 is out of range; must be > 0"
    with pytest.raises(ConfigError) as e:
        load_config("tiny", ["model.text.num_heads=5"])
    tiny = str(e.value).split(":")[0]
    assert str(e.value) == (
        f"{tiny}:17 and override 'model.text.num_heads=5': model.text.hidden_size: 128 is "
        "not divisible by num_heads (5)"
    )
    assert tiny.endswith("tiny.yaml")


def test_yaml_syntax_errors_and_duplicate_keys(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "train:\n  seed: 1\nmodel: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_config(bad)
    dup = _write(tmp_path / "dup.yaml", "train:\n  seed: 1\n  log_every: 2\n  seed: 4\n")
    with pytest.raises(ConfigError) as e:
        load_config(dup)
    assert str(e.value) == f"{dup}:4: train.seed: duplicate key (first at {dup}:2)"
    loop = _write(tmp_path / "loop.yaml", "base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(loop)
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(_write(tmp_path / "list.yaml", "- 1\n"))


def test_files_and_builtin_names(tmp_path, monkeypatch):
    child = _write(tmp_path / "child.yaml", "base: tiny\ntrain:\n  seed: 7\n")
    assert load_config(child).train.seed == 7
    with pytest.raises(ConfigError, match="neither a file nor a built-in"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["nonsense"])
    with pytest.raises(ConfigError, match=r"'train\.epochs' is not a section"):
        load_config("tiny", ["train.epochs.x=1"])  # tiny.yaml sets train.epochs
    monkeypatch.chdir(tmp_path)  # a folder named like a built-in config does not hide it
    (tmp_path / "tiny").mkdir()
    (tmp_path / "retrieval").mkdir()
    assert load_config("tiny").model.name == "tiny"
    assert load_config("retrieval", cls=FinetuneConfig).task.name == "retrieval"


def test_recipe_errors_name_the_recipe_or_the_model_file(tmp_path):
    recipe = _write(tmp_path / "recipe.yaml", """
        base: finetune/vqa_world
        task:
          num_neg: 2
        """)
    with pytest.raises(ConfigError) as e:
        load_config(recipe, cls=FinetuneConfig)
    assert str(e.value) == (
        f"{recipe}:3: task.num_neg: a key of task.name='retrieval', not of task.name='vqa'; "
        "valid keys of 'task' for task.name='vqa': name, head_lr_mult, eval_batch_pairs, "
        "eval_max_images, num_answers, soft_targets"
    )
    model = _write(tmp_path / "m.yaml", "model:\n  text:\n    hidden_size: 30\n    num_heads: 4\n")
    _write(recipe, "base: finetune/vqa_world\nmodel_from: m.yaml\n")
    with pytest.raises(ConfigError) as e:
        load_config(recipe, cls=FinetuneConfig)
    assert str(e.value).startswith(f"{model}:3,4: model.text.hidden_size: 30 is not divisible")
    _write(recipe, "base: finetune/vqa_world\nmodel_from: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"recipe\.yaml:2: model_from: config 'nowhere"):
        load_config(recipe, cls=FinetuneConfig)


def test_with_overrides_copies_a_config_and_names_the_override():
    from vlparse.config import with_overrides

    cfg = load_config("vqa_world", cls=FinetuneConfig)
    again = with_overrides(cfg, ["task.eval_max_images=0", "train.max_steps=3"])
    assert again.train.max_steps == 3 and cfg.train.max_steps is None
    assert type(again.task) is type(cfg.task) and again.model == cfg.model
    with pytest.raises(ConfigError) as e:
        with_overrides(cfg, ["task.eval_batch_pairs=8", "task.rerank_k=16"])
    assert str(e.value).startswith("override 'task.rerank_k=16': task.rerank_k: a key of "
                                   "task.name='retrieval', not of task.name='vqa'")


def test_field_error_survives_pickling():
    with pytest.raises(FieldError) as e:
        load_config("tiny", ["train.log_every=0"])
    again = pickle.loads(pickle.dumps(e.value))
    assert str(again) == str(e.value) and again.key == "train.log_every"


def test_cli_reports_a_bad_value_in_one_line(capsys):
    from vlparse.cli import main

    assert main(["info", "--config", "tiny", "train.ckpt_every=-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("vlparse: error: override 'train.ckpt_every=-1': train.ckpt_every: -1 is "
                   "out of range; must be >= 0")
