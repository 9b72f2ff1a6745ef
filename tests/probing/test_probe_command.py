"""End-to-end ``vlparse probe``: a 2-step pre-training run, probed twice under two labels."""

from __future__ import annotations

import json

import pytest
import torch

from vlparse.cli import main
from vlparse.config import load_config
from vlparse.data import read_pretrain_records
from vlparse.data.manifest import load_manifest
from vlparse.models.loading import load_run
from vlparse.models.single_stream import VisualParsingModel
from vlparse.tasks.pretrain import run_pretrain


def test_probe_command_writes_json_and_figures(scene_world, small_overrides, tmp_path):
    cfg = load_config("tiny", [*small_overrides, "train.max_steps=2"])
    run = tmp_path / "run"
    run_pretrain(cfg, scene_world, run, evaluate=False)

    model, loaded_cfg, _ = load_run(run)
    assert not model.training
    num_layers = loaded_cfg.model.text.num_layers
    # the run exported its final model, self-contained: the same weights as its last checkpoint
    exported = VisualParsingModel.from_pretrained(run / "model")
    assert exported.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(a, exported.state_dict()[k]) for k, a in model.state_dict().items())

    manifest = load_manifest(scene_world)
    val = read_pretrain_records(manifest, ["coco"], ["val"])
    assert 1 <= len(val) < 8 < len(read_pretrain_records(manifest, ["vg"], ["train"]))

    out = tmp_path / "probe"
    argv = ["probe", "--checkpoint", str(run), "--checkpoint", str(run)]
    argv += ["--label", "a", "--label", "b", "--data", str(scene_world)]
    argv += ["--out", str(out), "--num-samples", "8", "--batch-size", "4"]
    assert main(argv) == 0

    imf = json.loads((out / "imf.json").read_text())
    nmi = json.loads((out / "nmi.json").read_text())
    assert set(imf) == {"a", "b"} and set(nmi) == {"a", "b"}
    for label in ("a", "b"):
        entry = imf[label]
        assert set(entry) >= {"F", "F_1j", "F_ii", "num_samples", "model", "data"}
        # the paper's data: IMF on the pre-training pairs (3.2), NMI on Visual Genome (4.4)
        assert (entry["data"], nmi[label]["data"]) == ("pretrain", "vg/train")
        assert entry["num_samples"] == nmi[label]["num_samples"] == 8
        assert entry["model"] == loaded_cfg.model.name
        flow = entry["F"]
        assert len(flow) == num_layers and all(len(row) == num_layers for row in flow)
        assert len(entry["F_1j"]) == num_layers and len(entry["F_ii"]) == num_layers
        for i in range(num_layers):
            for j in range(num_layers):
                if j < i:
                    assert flow[i][j] is None
                else:
                    assert isinstance(flow[i][j], float) and 0.0 <= flow[i][j] <= 1.0 + 1e-6
        assert entry["F_1j"] == flow[0]
        assert entry["F_ii"] == [flow[i][i] for i in range(num_layers)]
        assert len(nmi[label]["nmi"]) == num_layers + 1
    # same checkpoint, same data, same seed: identical results
    assert imf["a"]["F"] == imf["b"]["F"]
    for name in ("imf_from_input.png", "imf_within_layer.png", "nmi.png"):
        path = out / name
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # held-out pairs on request, both probes from one pass
    held = tmp_path / "held"
    assert main(["probe", "--checkpoint", str(run), "--label", "a", "--data", str(scene_world),
                 "--out", str(held), "--num-samples", "8", "--batch-size", "4",
                 "--imf-data", "coco/val", "--nmi-data", "coco/val"]) == 0
    imf_held = json.loads((held / "imf.json").read_text())["a"]
    assert imf_held["data"] == "coco/val" and imf_held["num_samples"] == len(val)
    assert imf_held["F"] != imf["a"]["F"]

    # a checkpoint step folder resolves to its run's config
    step = sorted((run / "checkpoints").glob("step_*"))[-1]
    assert load_run(step)[1] == loaded_cfg


def test_load_run_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        load_run(tmp_path / "empty")


def test_probe_cli_reports_missing_checkpoint(scene_world, tmp_path, capsys):
    argv = ["probe", "--checkpoint", str(tmp_path / "nope"), "--data", str(scene_world)]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_probe_sources(scene_world, small_overrides):
    from vlparse.commands import probe as probe_command
    from vlparse.probing import run as probe_run

    assert (probe_command.IMF_DATA, probe_command.NMI_DATA) == (probe_run.IMF_DATA,
                                                                probe_run.NMI_DATA)
    manifest = load_manifest(scene_world)
    cfg = load_config("tiny", small_overrides)
    pre = probe_run._source_records(manifest, cfg, "pretrain")
    assert pre == read_pretrain_records(manifest, ["coco", "vg"], ["train", "restval"])
    assert {r.source for r in pre} == {"coco", "vg"}
    vg = probe_run._source_records(manifest, cfg, "vg/train")
    assert vg == read_pretrain_records(manifest, ["vg"], ["train"])
    with pytest.raises(ValueError, match="neither 'pretrain' nor 'DATASET/SPLIT'"):
        probe_run._source_records(manifest, cfg, "vg")
    with pytest.raises(FileNotFoundError, match="no coco/train2014; .* vg/train"):
        probe_run._source_records(manifest, cfg, "coco/train2014")
