"""``vlparse ablate``: rows, statistics, the report, resume and the experiment check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlparse.cli import main
from vlparse.config import load_config
from vlparse.errors import ConfigError
from vlparse.tasks import ablation
from vlparse.tasks.ablation import AblationMismatchError, get_rows, row_config
from vlparse.tasks.ablation_report import summarize, write_report


def test_rows_match_the_shipped_configs_and_tiny_variants():
    rows = {r.name: r for r in get_rows()}
    assert list(rows) == ["r50", "r101", "swin_nomfr", "swin_randmfr", "swin_mfr", "patch"]
    for name, shipped in (("r50", "ablation_r50"), ("r101", "ablation_r101"),
                          ("patch", "ablation_patch")):
        cfg = row_config(rows[name], "ablation", seed=2, steps=100)
        ref = load_config(shipped)
        assert cfg.model.visual == ref.model.visual, name
        assert cfg.model.text == ref.model.text and cfg.objectives == ref.objectives, name
        assert (cfg.train.seed, cfg.train.max_steps) == (2, 100)
    modes = {n: row_config(rows[n], "ablation", 0, 10).objectives.mfr_mode
             for n in ("swin_nomfr", "swin_randmfr", "swin_mfr")}
    assert modes == {"swin_nomfr": "off", "swin_randmfr": "random", "swin_mfr": "attention"}
    # a short budget caps the 500-step warm-up at 10 %, unless the user sets it
    assert row_config(rows["swin_mfr"], "ablation", 0, 100).optim.warmup_steps == 10
    user = ["optim.warmup_steps=50"]
    assert row_config(rows["swin_mfr"], "ablation", 0, 100, user).optim.warmup_steps == 50
    # tiny: every row on the tiny config, small ResNets, 16-px patches (36 tokens like Swin)
    tiny = {n: row_config(r, "tiny", 0, 5, tiny=True) for n, r in rows.items()}
    assert tiny["r50"].model.visual.arch == "resnet10t"
    assert tiny["r101"].model.visual.arch == "resnet18"
    assert tiny["patch"].model.visual.patch_size == 16
    assert {c.model.visual.image_size for c in tiny.values()} == {96}
    with pytest.raises(ConfigError, match="swin_mfr, patch"):
        get_rows(["r50", "vit"])


def test_summarize_matches_numpy():
    values = np.random.default_rng(0).normal(0.4, 0.05, size=5)
    s = summarize(values.tolist())
    assert s["n"] == 5 and s["mean"] == pytest.approx(values.mean(), abs=1e-12)
    assert s["std"] == pytest.approx(values.std(ddof=1), abs=1e-12)
    one = summarize([0.3])
    assert (one["mean"], one["std"], one["n"]) == (0.3, None, 1)
    with_nan = summarize([0.1, float("nan"), 0.3])
    assert with_nan["n"] == 2 and with_nan["mean"] == pytest.approx(0.2)
    assert summarize([])["mean"] is None
    # the runner module still exports the report's public names
    assert ablation.summarize is summarize and ablation.write_report is write_report


def test_experiment_arguments_are_checked(tmp_path):
    args = {"pretrain_steps": 10, "overrides": ["train.batch_size=8"]}
    ablation._experiment(args, tmp_path)
    ablation._experiment(dict(args), tmp_path)  # same arguments: fine
    with pytest.raises(AblationMismatchError, match="pretrain_steps: stored 10, now 20"):
        ablation._experiment({**args, "pretrain_steps": 20}, tmp_path)


def _row(label: str, f: list[float], score: list[float]) -> dict:
    visual = {"arch": "resnet50", "patch_size": None, "image_size": 224, "tokens": 49,
              "gmacs": 4.11, "params_m": 23.5}
    return {"label": label, "backbone": label, "objectives": "MLM+ITM", "visual": visual,
            "f1L": summarize(f), "score": summarize(score), "paper": None}


def test_report_states_orderings_against_the_seed_spread(tmp_path):
    table = {
        "experiment": {"base_config": "ablation", "pretrain_steps": 5, "finetune_steps": 5,
                       "task": "vqa", "finetune_config": "vqa_world", "overrides": [],
                       "tiny": False, "probe_samples": 10},
        "seeds": [0, 1, 2], "layers": 3, "metric": "vqa_score", "task": "vqa",
        "rows": {
            "r101": _row("R101", [0.40, 0.41, 0.42], [0.50, 0.51, 0.52]),
            "r50": _row("R50", [0.30, 0.31, 0.32], [0.50, 0.53, 0.56]),
        },
    }
    paths = write_report(tmp_path, table)
    assert [p.name for p in paths] == ["table5.json", "table5.md", "table5.png"]
    md = (tmp_path / "table5.md").read_text()
    assert "| `r101` | R101 | MLM+ITM | resnet50 @224px, 49 tokens | 4.11 | 23.5 | " in md
    assert "0.410 ± 0.010" in md and "53.00 ± 3.00" in md  # VQA score shown x100
    line = next(x for x in md.splitlines() if x.startswith("- R101 > R50"))
    assert "F^{1,3} +0.1000" in line and "holds, beyond 2 SE" in line
    assert "vqa_score -0.0200" in line and "reversed, within the seed spread" in line
    assert json.loads((tmp_path / "table5.json").read_text()) == table


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny models on a shared 2-core machine run several times faster."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_ablate_end_to_end_resume_and_mismatch(scene_world, small_overrides, tmp_path,
                                               capsys, monkeypatch, one_thread):
    import matplotlib.image

    import vlparse.probing.run as probe_run
    import vlparse.tasks.finetune as finetune
    import vlparse.tasks.pretrain as pretrain
    import vlparse.train.logging as train_logging

    # the loss-curve figure of every pre-training run is not under test here and costs seconds
    monkeypatch.setattr(train_logging, "plot_curves", lambda *a, **k: None)
    out = tmp_path / "abl"
    argv = ["ablate", "--data", str(scene_world), "--out", str(out), "--tiny", "--seeds", "2",
            "--rows", "swin_mfr,patch", "--pretrain-steps", "2", "--finetune-steps", "1",
            "--probe-samples", "6", "--no-progress", *small_overrides, "train.eval_images=2",
            "model.visual.image_size=64", "model.visual.window_size=4",  # the world's 64 px
            "finetune.train.batch_size=4", "finetune.task.eval_max_images=4"]
    assert main(argv) == 0
    log = capsys.readouterr().out
    assert "[1/4] swin_mfr seed 0: pre-train (2 steps)" in log
    assert "[4/4] patch seed 1: fine-tune vqa (1 steps)" in log
    assert "[4/4] patch seed 1: probe F^{1,2}" in log

    table = json.loads((out / "table5.json").read_text())
    assert list(table["rows"]) == ["swin_mfr", "patch"] and table["layers"] == 2
    assert table["metric"] == "vqa_score"
    for name, row in table["rows"].items():
        units = [json.loads((out / "runs" / name / f"seed{s}" / "summary.json").read_text())
                 for s in (0, 1)]
        assert [u["pretrain"]["steps"] for u in units] == [2, 2]
        assert [u["finetune"]["steps"] for u in units] == [1, 1]
        for key in ("f1L", "score"):
            vals = np.array([u[key] for u in units])
            assert row[key]["values"] == vals.tolist() and row[key]["n"] == 2
            assert row[key]["mean"] == pytest.approx(vals.mean(), abs=1e-12)
            assert row[key]["std"] == pytest.approx(vals.std(ddof=1), abs=1e-12)
        assert all(0.0 <= u["f1L"] <= 1.0 and 0.0 <= u["score"] <= 1.0 for u in units)
        assert row["visual"]["params_m"] > 0 and row["visual"]["tokens"] == 16
        assert "--config tiny" in row["commands"]["pretrain"]
    assert table["rows"]["swin_mfr"]["pretrain_config"]["objectives"]["mfr_mode"] == "attention"
    assert table["rows"]["swin_mfr"]["paper"]["f13"] == 0.474
    md = (out / "table5.md").read_text()
    mean = table["rows"]["patch"]["f1L"]["mean"]
    assert "| `patch` | Patch proj. | MLM+ITM | patch 16 @64px, 16 tokens |" in md
    assert f"{mean:.3f} ± " in md
    assert matplotlib.image.imread(out / "table5.png").shape[2] in (3, 4)

    # a re-run skips finished units without training or probing
    done = sorted((out / "runs").glob("*/seed*/summary.json"))
    mtimes = [p.stat().st_mtime_ns for p in done]
    with monkeypatch.context() as m:
        def fail(*a, **k):
            raise AssertionError("a finished unit was run again")

        for mod, name in ((pretrain, "run_pretrain"), (finetune, "run_finetune"),
                          (probe_run, "probe_checkpoint")):
            m.setattr(mod, name, fail)
        assert main(argv) == 0
    assert capsys.readouterr().out.count("done earlier, skipped") == 4
    assert [p.stat().st_mtime_ns for p in done] == mtimes

    # an interrupted unit (fine-tuning stopped after its checkpoint) resumes; pre-training kept
    unit = out / "runs" / "patch" / "seed1"
    (unit / "summary.json").unlink()
    (unit / "vqa" / "summary.json").unlink()
    assert main(argv) == 0
    log = capsys.readouterr().out
    assert "[4/4] patch seed 1: pre-train done" in log
    assert "[4/4] patch seed 1: fine-tune vqa resumed" in log
    assert json.loads((unit / "summary.json").read_text())["finetune"]["steps"] == 1

    # other experiment arguments fail clearly instead of mixing runs
    changed = [a if a != "2" else "3" for a in argv]  # --pretrain-steps 3 (and --seeds 3)
    assert main(changed) == 2
    err = capsys.readouterr().err
    assert "pretrain_steps: stored 2, now 3" in err and "new --out folder" in err


def test_units_accumulate_across_fresh_runs(scene_world, small_overrides, tmp_path, capsys,
                                            monkeypatch, one_thread):
    """One unit per call into a units folder; each call starts in a fresh --out (a fresh
    machine), takes the units of the folder without running them and runs the next missing one;
    --max-units 0 only rebuilds the table; a unit of another experiment is refused."""
    import vlparse.probing.run as probe_run
    import vlparse.tasks.finetune as finetune
    import vlparse.tasks.pretrain as pretrain
    import vlparse.train.logging as train_logging
    from vlparse.tasks.ablation_units import UNIT_TOPIC

    monkeypatch.setattr(train_logging, "plot_curves", lambda *a, **k: None)
    units = tmp_path / "units"

    def argv(out: str, max_units: int, steps: str = "2") -> list[str]:
        return ["ablate", "--data", str(scene_world), "--out", str(tmp_path / out), "--tiny",
                "--seeds", "2", "--rows", "patch", "--pretrain-steps", steps,
                "--finetune-steps", "1", "--probe-samples", "6", "--no-progress",
                "--units", str(units), "--max-units", str(max_units), *small_overrides,
                "train.eval_images=2", "model.visual.image_size=64",
                "model.visual.window_size=4", "finetune.train.batch_size=4",
                "finetune.task.eval_max_images=4"]

    assert main(argv("a", 1)) == 0
    assert sorted(p.name for p in units.iterdir()) == ["patch-seed0.json"]
    first = json.loads((units / "patch-seed0.json").read_text())
    assert first["topic"] == UNIT_TOPIC and first["results"]["experiment"]["pretrain_steps"] == 2
    assert json.loads((tmp_path / "a" / "table5.json").read_text())["rows"]["patch"][
        "f1L"]["n"] == 1
    assert "patch seed 1: missing, left for a later run" in capsys.readouterr().out

    assert main(argv("b", 1)) == 0  # a fresh folder: seed 0 from its file, seed 1 run
    log = capsys.readouterr().out
    assert "[1/2] patch seed 0: unit file found, not run" in log
    assert "[2/2] patch seed 1: pre-train (2 steps)" in log
    assert not (tmp_path / "b" / "runs" / "patch" / "seed0").exists()
    assert sorted(p.name for p in units.iterdir()) == ["patch-seed0.json", "patch-seed1.json"]

    with monkeypatch.context() as m:
        def fail(*a, **k):
            raise AssertionError("a unit was run with --max-units 0")

        for mod, name in ((pretrain, "run_pretrain"), (finetune, "run_finetune"),
                          (probe_run, "probe_checkpoint")):
            m.setattr(mod, name, fail)
        assert main(argv("c", 0)) == 0
    table = json.loads((tmp_path / "c" / "table5.json").read_text())
    stored = [json.loads((units / f"patch-seed{s}.json").read_text())["results"]["unit"]
              for s in (0, 1)]
    assert table["rows"]["patch"]["f1L"]["values"] == [u["f1L"] for u in stored]
    assert table["rows"]["patch"]["score"]["n"] == 2
    assert (tmp_path / "c" / "table5.png").is_file()

    assert main(argv("d", 0, steps="3")) == 2  # the units are of a 2-step experiment
    assert "belongs to another experiment" in capsys.readouterr().err
