"""Every user error is one line ``vlparse: error: ...`` with exit status 2, not a traceback.

Guards against the old behaviour: an empty data set, a batch larger than the data set,
evaluating a run of another task, offline pretrained weights and a folder named like a built-in
config (``mkdir tiny && vlparse info --config tiny`` raised IsADirectoryError) escaped as
tracebacks with status 1.
"""

from __future__ import annotations

import json
import shutil

from vlparse.cli import main

FAST = ["model.visual.image_size=64", "model.visual.window_size=4"]


def test_an_empty_data_set(tmp_path, scene_world, pretrain_args, capsys, one_line_error):
    world = tmp_path / "w"
    shutil.copytree(scene_world.parent, world)
    manifest = json.loads((world / scene_world.name).read_text())
    karpathy = world / manifest["coco"]["train"]["karpathy"]
    data = json.loads(karpathy.read_text())
    data["images"] = [im for im in data["images"] if im["split"] != "train"]
    karpathy.write_text(json.dumps(data))
    argv = pretrain_args(tmp_path / "run", "train.max_steps=1", "data.train_splits=[train]")
    argv[argv.index("--data") + 1] = str(world / scene_world.name)
    assert main(argv) == 2
    assert "no pre-training images" in one_line_error(capsys.readouterr().err)


def test_a_batch_larger_than_the_data_set(tmp_path, pretrain_args, capsys, one_line_error):
    argv = pretrain_args(tmp_path / "run", "data.train_splits=[restval]", "train.max_steps=1",
                         "train.batch_size=64")
    assert main(argv) == 2
    assert "lower train.batch_size" in one_line_error(capsys.readouterr().err)


def test_evaluating_a_run_of_another_task(tmp_path, scene_world, small_overrides, capsys,
                                          one_line_error):
    run = tmp_path / "vqa"
    model = [o for o in small_overrides if not o.startswith("objectives.")] + FAST
    assert main(["finetune", "vqa", "--data", str(scene_world), "--out", str(run), "--config",
                 "vqa_world", "--no-eval", *model, "train.max_steps=1"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "retrieval", "--checkpoint", str(run), "--data", str(scene_world),
                 "--split", "test", "--out", str(tmp_path / "r.json"), "--no-progress"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "fine-tuned for 'vqa'" in line and "vlparse evaluate vqa" in line


def test_offline_pretrained_weights(tmp_path, cli, pretrain_args, one_line_error):
    done = cli(*pretrain_args(tmp_path / "run", "train.max_steps=1",
                              "model.text.pretrained=no-such-org/no-such-bert"),
               env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "text.pretrained 'no-such-org/no-such-bert'" in one_line_error(done.stderr)


def test_a_folder_named_like_a_built_in_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    assert main(["info", "--config", "tiny"]) == 0
    assert "name: tiny" in capsys.readouterr().out
