"""``vlparse finetune`` / ``vlparse evaluate`` end to end on the scene world, recipes, registry."""

from __future__ import annotations

import json

import pytest

from vlparse.cli import main
from vlparse.config import FinetuneConfig, PretrainConfig, load_config
from vlparse.errors import ConfigError, TaskNotImplementedError
from vlparse.tasks.base import get_task
from vlparse.tasks.finetune import finetune_task

KEYS = {"tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "split", "num_examples"}


def _model_overrides(small_overrides: list[str]) -> list[str]:
    return [o for o in small_overrides if not o.startswith("objectives.")]


def _pretrain_run(run, small_overrides):
    """A pre-training run folder (config.yaml + checkpoint) of a fresh tiny model: what
    ``load_run`` reads, without spending test time on pre-training steps."""
    import torch
    import yaml

    from vlparse.config import to_dict
    from vlparse.models.single_stream import VisualParsingModel
    from vlparse.train.checkpoint import save_checkpoint

    cfg = load_config("tiny", small_overrides)
    torch.manual_seed(0)
    model = VisualParsingModel(cfg.model, 30522)
    torch.nn.init.normal_(model.itm_head.fc.weight)  # recognisable when copied
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    save_checkpoint(run, 1, model, None, None, {"step": 1})
    return run


def test_paper_recipes_hold_the_paper_hyper_parameters():
    r = load_config("retrieval", cls=FinetuneConfig)
    assert r.task.name == "retrieval" and r.model.name == "paper"
    assert (r.optim.lr, r.train.batch_size, r.train.epochs) == (5e-5, 32, 10)
    assert r.optim.decay_epochs == [5] and r.optim.decay_factor == 0.5
    assert r.data.train_sets == ["flickr30k"] and r.task.itm_head_init
    v = load_config("vqa", cls=FinetuneConfig)
    assert (v.train.epochs, v.train.batch_size, v.optim.decay_epochs) == (100, 512, [65, 75])
    n = load_config("nlvr2", cls=FinetuneConfig)
    assert n.optim.decay_epochs == [60, 65, 70, 75, 78, 79] and n.optim.decay_factor == 0.5
    s = load_config("snli_ve", cls=FinetuneConfig)
    assert s.task.name == "snli-ve" and s.optim.decay_epochs == [15, 20, 23]
    w = load_config("retrieval_world", ["model.text.num_layers=2"], cls=FinetuneConfig)
    assert w.model.name == "tiny" and w.model.text.num_layers == 2 and w.task.name == "retrieval"
    # pre-training configs still load as before, and a wrong key is named
    assert isinstance(load_config("tiny"), PretrainConfig)
    with pytest.raises(ConfigError, match="task.num_negs"):
        load_config("retrieval", ["task.num_negs=2"], cls=FinetuneConfig)


def test_tasks_without_module_are_reported(capsys, tmp_path, monkeypatch):
    import types

    from vlparse.tasks import base

    missing = {**base.TASK_MODULES, "nlvr2": "vlparse.tasks._missing",
               "snli-ve": "vlparse.tasks._missing"}
    monkeypatch.setattr(base, "TASK_MODULES", types.MappingProxyType(missing))
    with pytest.raises(TaskNotImplementedError, match="not yet implemented"):
        get_task("nlvr2")
    with pytest.raises(ValueError, match="unknown task"):
        get_task("captioning")
    argv = ["finetune", "snli-ve", "--data", "m.json", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    assert "not yet implemented" in capsys.readouterr().err


def test_finetune_and_evaluate_retrieval_end_to_end(scene_world, small_overrides, tmp_path):
    pre = _pretrain_run(tmp_path / "pre", small_overrides)
    # the head starts from the pre-trained ITM head
    from vlparse.data.manifest import load_manifest

    cfg = load_config("retrieval_world", cls=FinetuneConfig)
    task = finetune_task("retrieval", cfg, load_manifest(scene_world), init=pre, log=None)
    assert task.cfg.model.text.hidden_size == 32  # the pre-trained run's model, not the recipe's
    model = task.build_model()
    assert bool((model.head.fc.weight == model.backbone.itm_head.fc.weight).all())

    out = tmp_path / "ft"
    argv = ["finetune", "retrieval", "--data", str(scene_world), "--init", str(pre),
            "--out", str(out), "--config", "retrieval_world",
            *_model_overrides(small_overrides), "train.max_steps=2", "task.num_neg=1"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "retrieval" and summary["steps"] == 2
    assert summary["init"] == str(pre)
    assert {"tr_r1", "ir_r10"} <= set(summary["val"])
    assert (out / "task_state.json").is_file()

    full, rerank = tmp_path / "test.json", tmp_path / "rerank.json"
    base = ["evaluate", "retrieval", "--checkpoint", str(out), "--data", str(scene_world),
            "--split", "test", "--no-progress", "--workers", "0"]
    assert main([*base, "--out", str(full), "--batch-pairs", "7"]) == 0
    assert main([*base, "--out", str(rerank), "--rerank-k", "100000"]) == 0
    a, b = json.loads(full.read_text()), json.loads(rerank.read_text())
    assert KEYS <= set(a) and a["split"] == "test"
    assert a["num_examples"] == a["num_images"] >= 2 and a["num_captions"] >= a["num_images"]
    assert a["pairs_scored"] == a["num_images"] * a["num_captions"]
    for k in KEYS - {"split", "num_examples"}:
        assert 0.0 <= a[k] <= 1.0
        assert a[k] == b[k], k  # re-ranking every candidate is the full ranking
    assert b["rerank_k"] == 100000

    # zero-shot: a pre-training run is scored by its ITM head
    zs = tmp_path / "zs.json"
    assert main([*base, "--out", str(zs), "--checkpoint", str(pre)]) == 0
    assert KEYS <= set(json.loads(zs.read_text()))
