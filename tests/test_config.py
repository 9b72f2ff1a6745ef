import pytest

from vlparse.config import (
    ConfigError,
    PretrainConfig,
    apply_overrides,
    builtin_configs,
    load_config,
    to_dict,
)


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


def test_base_chain_and_overrides():
    cfg = load_config("quickstart", ["train.batch_size=8", "objectives.mfr_mode=random"])
    assert cfg.model.name == "tiny"  # inherited from the base
    assert cfg.train.batch_size == 8 and cfg.objectives.mfr_mode == "random"


def test_unknown_key_names_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_config("tiny", ["model.visul.arch=x"])
    msg = str(e.value)
    assert "model.visul" in msg and "visual" in msg and "text" in msg


def test_bad_values_fail_with_the_key():
    with pytest.raises(ConfigError, match="objectives.mfr_mode"):
        load_config("tiny", ["objectives.mfr_mode=sometimes"])
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config("tiny", ["train.batch_size=abc"])
    with pytest.raises(ConfigError, match="divisible"):
        load_config("tiny", ["train.batch_size=10", "train.grad_accum=3"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["nonsense"])
    with pytest.raises(ConfigError, match="objectives.itm_negatives"):
        load_config("tiny", ["objectives.itm_negatives=hard"])
    with pytest.raises(ConfigError, match="multiple of objectives.itm_negative_group"):
        load_config("tiny", ["objectives.itm_negatives=batch", "train.batch_size=12"])
    with pytest.raises(ConfigError, match="itm_negative_group must be >= 2"):
        load_config("tiny", ["objectives.itm_negative_group=1"])


def test_yaml_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    child = tmp_path / "child.yaml"
    child.write_text("base: tiny\ntrain:\n  seed: 7\n")
    assert load_config(child).train.seed == 7
    with pytest.raises(ConfigError, match="neither a file nor a built-in"):
        load_config(tmp_path / "missing.yaml")


def test_round_trip_dict():
    cfg = load_config("tiny")
    from vlparse.config import from_dict

    again = from_dict(PretrainConfig, to_dict(cfg))
    assert again == cfg
