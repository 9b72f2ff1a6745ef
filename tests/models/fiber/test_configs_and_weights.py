"""The named FIBER configs, config validation, and initialisation from pretrained weights (the
real MiniLM-L6 weights shipped offline, local transformers checkpoints, and the offline errors of
``fiber_base``)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel, RobertaForMaskedLM

from vlparse.config import builtin_configs, from_dict, load_config
from vlparse.config.fiber import (
    FiberModelConfig,
    FiberObjectiveConfig,
    FiberTextConfig,
    FiberVisualConfig,
)
from vlparse.errors import ConfigError
from vlparse.models.fiber import FiberModel
from vlparse.models.fiber.loading import _bundled_folder
from vlparse.models.fiber.text_tower import hf_text_config


def _sections(name: str) -> tuple[FiberModelConfig, FiberObjectiveConfig]:
    cfg = load_config(name)
    return cfg.model, cfg.objectives


@pytest.mark.parametrize("name", ["fiber_tiny", "fiber_base"])
def test_named_configs_load_and_validate(name: str) -> None:
    assert name in builtin_configs()  # --config fiber_tiny works
    model, objectives = _sections(name)
    assert isinstance(model, FiberModelConfig) and isinstance(objectives, FiberObjectiveConfig)
    assert model.family == "fiber" and model.name == name
    assert objectives.lambda_itc == objectives.lambda_itm == objectives.lambda_mlm == 1.0


def test_fiber_base_is_the_papers_model() -> None:
    cfg, _ = _sections("fiber_base")
    assert cfg.visual.pretrained == "timm" and cfg.text.pretrained == "roberta-base"
    with torch.device("meta"):
        model = FiberModel(cfg)
    table = [(p.image_stage, p.image_block, p.text_layer, p.image_width) for p in model.pairs]
    assert table == [(2, 14, 6, 512), (2, 15, 7, 512), (2, 16, 8, 512), (2, 17, 9, 512),
                     (3, 0, 10, 1024), (3, 1, 11, 1024)]
    assert model.image.grid_size == (12, 12) and model.image.out_dim == 1024
    assert model.t2i[0].key_value.in_features == 512 and model.t2i[5].key_value.in_features == 1024
    assert model.i2t[0].key_value.in_features == 768 and model.i2t[0].num_heads == 16
    assert model.itm_head.fc.in_features == 1536


def test_fiber_base_offline_names_the_overrides(monkeypatch) -> None:
    import huggingface_hub
    import timm

    def offline(*_args, **kwargs):
        if kwargs.get("pretrained", True):
            raise OSError("no internet and not in the cache")
        return real_create(*_args, **kwargs)

    real_create = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    cfg, _ = _sections("fiber_base")
    with torch.device("meta"):
        model = FiberModel(cfg)
    with pytest.raises(ConfigError, match=r"model\.visual\.pretrained.*null"):
        model.load_pretrained()
    model.cfg = replace(cfg, visual=replace(cfg.visual, pretrained=None))
    with pytest.raises(ConfigError, match=r"roberta-base.*cache.*model\.text\.pretrained.*null"):
        model.load_pretrained()


@pytest.mark.parametrize(
    "section, override, key",
    [
        ("fusion", {"num_layers": 7}, "model.fusion.num_layers"),
        ("visual", {"image_size": 100}, "model.visual.image_size"),
        ("visual", {"num_heads": [2]}, "model.visual.num_heads"),
        ("visual", {"num_heads": [5, 4]}, "head count"),
        ("text", {"num_heads": 5}, "model.text.hidden_size"),
        ("text", {"max_text_len": 600}, "model.text.max_text_len"),
        ("fusion", {"final_norms": "sometimes"}, "model.fusion.final_norms"),
        ("fusion", {"depth": 2}, "model.fusion.depth: unknown key"),
    ],
)
def test_bad_values_name_their_key(section, override, key) -> None:
    data = {"visual": {"depths": [2, 2], "num_heads": [2, 4], "embed_dim": 48,
                       "image_size": 96, "patch_size": 8},
            "text": {"num_layers": 6}}
    data.setdefault(section, {}).update(override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(FiberModelConfig, data, "model")


def test_objective_ranges() -> None:
    with pytest.raises(ConfigError, match="itc_temperature"):
        FiberObjectiveConfig(itc_temperature=2.0)
    with pytest.raises(ConfigError, match="mlm_prob"):
        FiberObjectiveConfig(mlm_prob=0.0)
    assert FiberObjectiveConfig().hard_negative_exclude == "same_image"


def test_fiber_tiny_starts_from_the_shipped_minilm_weights() -> None:
    cfg, _ = _sections("fiber_tiny")
    model = FiberModel(cfg).eval()
    report = model.load_pretrained()["text"]
    assert not [k for k in report.missing if k.startswith("text.model.")]
    assert set(report.unexpected) <= {"embeddings.position_ids", "pooler.dense.weight",
                                      "pooler.dense.bias"}
    ref = BertModel.from_pretrained(str(_bundled_folder("all-MiniLM-L6-v2"))).eval()
    ids = torch.tensor([[101, 1037, 2417, 4937, 2006, 1037, 2630, 4937, 102, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        ours = model.encode_text(ids, mask).last_hidden_state
        theirs = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        fused = model(torch.randn(1, 3, 96, 96), ids, mask).text_hidden_state
    assert torch.equal(ours, theirs)
    assert torch.equal(fused, theirs)  # every gate is 0


def test_a_checkpoint_of_another_shape_names_the_fields(tmp_path) -> None:
    cfg, _ = _sections("fiber_tiny")
    text = replace(cfg.text, num_layers=4, hidden_size=256, num_heads=4)
    expected = r"hidden_size=256 \(checkpoint: 384\).*num_layers=4 \(checkpoint: 6\)"
    with pytest.raises(ConfigError, match=expected):
        FiberModel(replace(cfg, text=text, fusion=replace(cfg.fusion, num_layers=2))
                   ).load_pretrained()
    missing = replace(cfg.text, pretrained=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="does not exist.*null"):
        FiberModel(replace(cfg, text=missing)).load_pretrained()


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_masked_lm_checkpoints_fill_backbone_and_mlm_head(make_config, tmp_path, kind) -> None:
    cfg = make_config(kind)
    hf = hf_text_config(cfg.text)
    source = (RobertaForMaskedLM if kind == "roberta" else BertForMaskedLM)(hf).eval()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01 * torch.randn_like(p))  # differ from any fresh initialisation
    source.save_pretrained(tmp_path)
    model = FiberModel(replace(cfg, text=replace(cfg.text, pretrained=str(tmp_path)))).eval()
    report = model.load_pretrained()["text"]
    assert report.missing == [] and report.unexpected == []
    base = source.roberta if kind == "roberta" else source.bert
    head = source.lm_head if kind == "roberta" else source.cls
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(),
                                                  model.text.model.state_dict().values(),
                                                  strict=True))
    ids = torch.randint(3, 50, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ref = source(input_ids=ids, attention_mask=mask).logits
        ours = model.mlm_logits(model.encode_text(ids, mask).last_hidden_state)
    assert head is not None
    torch.testing.assert_close(ours, ref)


def test_random_text_init_reads_nothing(make_config) -> None:
    model = FiberModel(make_config())
    assert model.load_pretrained() == {}
    assert isinstance(model.cfg.visual, FiberVisualConfig)
    assert isinstance(model.cfg.text, FiberTextConfig)
    assert isinstance(hf_text_config(model.cfg.text), BertConfig)


def test_info_describes_the_fused_pairs_and_the_roles(capsys) -> None:
    from vlparse.cli import main

    assert main(["info", "--config", "fiber_base"]) == 0
    out = capsys.readouterr().out
    assert "2.14 <-> 6, 2.15 <-> 7, 2.16 <-> 8, 2.17 <-> 9, 3.0 <-> 10, 3.1 <-> 11" in out
    assert "last grid 12 x 12 (144 tokens)" in out
    total = float(out.split("multi-modal model: ")[1].split(" M")[0])
    roles = out.split("parameters: ")[1].splitlines()[0].split(", ")
    assert [r.split()[0] for r in roles] == ["image_backbone", "text_backbone", "cross_modal",
                                             "head"]
    assert sum(float(r.split()[1]) for r in roles) == pytest.approx(total, abs=0.1)
