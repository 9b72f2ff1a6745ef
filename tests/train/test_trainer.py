"""The trainer on a toy task (a linear model on numbers, no images): the first optimizer step in
closed form, accumulation, the log window, the stop rules, bad data, run folders, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from vlparse.config import DataConfig, OptimConfig, TrainConfig
from vlparse.errors import BadDataError, RunFolderError
from vlparse.train.distributed import init_distributed
from vlparse.train.logging import LogWindow, read_jsonl
from vlparse.train.protocol import StepContext, StepOutput, TrainTask
from vlparse.train.trainer import Trainer


class ToyData(Dataset):
    """Item ``i``: ``x = [i mod 7, 1]``, ``y = 2 (i mod 7) + 1``; items in ``bad`` report a
    skipped image."""

    def __init__(self, n: int, bad: frozenset[int] = frozenset()) -> None:
        self.n, self.bad = n, bad

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        v = float(i % 7)
        return {"x": torch.tensor([v, 1.0]), "y": torch.tensor(2 * v + 1), "index": i,
                "skipped": [(f"img{i}.jpg", "corrupt")] if i in self.bad else []}


def toy_collate(items: list[dict]) -> dict:
    return {"x": torch.stack([it["x"] for it in items]),
            "y": torch.stack([it["y"] for it in items]), "index": [it["index"] for it in items],
            "skipped": [s for it in items for s in it["skipped"]]}


class ToyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        return [{"name": "all", "params": [self.w], "lr": optim.lr,
                 "weight_decay": optim.weight_decay}]

    def save_pretrained(self, folder: Path) -> None:
        from safetensors.torch import save_model

        folder.mkdir(parents=True)
        save_model(self, str(folder / "model.safetensors"))
        (folder / "config.json").write_text("{}")


class ToyTask:
    """Mean squared error over the global batch; every step draws one number from the global
    RNG (as dropout would) and keeps it in ``draws``."""

    name = "toy"
    find_unused_parameters = False

    def __init__(self, n: int = 64, bad: frozenset[int] = frozenset()) -> None:
        self.data = ToyData(n, bad)
        self.draws: list[float] = []

    def build_model(self) -> nn.Module:
        return ToyModel()

    def train_dataset(self) -> Dataset:
        return self.data

    def eval_dataset(self) -> Dataset:
        return self.data

    def collate(self, items: list[dict]) -> dict:
        return toy_collate(items)

    def step(self, model: nn.Module, batch: dict, ctx: StepContext) -> StepOutput:
        self.draws.append(float(torch.rand(())))
        err = model(batch["x"]) - batch["y"]
        count = ctx.reduce_count(torch.tensor(float(err.numel()), device=err.device))
        loss = (err**2).sum() / count
        hits = int((err.abs() < 1).sum())
        return StepOutput(loss, {"loss": float(loss.detach())},
                          {"hit_correct": hits, "hit_total": err.numel()})

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        return {"w0": float(model.w[0])}

    def curve_keys(self) -> list[str]:
        return ["loss", "lr"]


def _trainer(run_dir: Path, *, steps: int | None = 2, batch: int = 4, accum: int = 1,
             **kw) -> Trainer:
    optim = OptimConfig(lr=0.1, weight_decay=0.0, warmup_steps=kw.pop("warmup", 0),
                        decay_epochs=[], grad_clip=None)
    train = TrainConfig(max_steps=steps, epochs=kw.pop("epochs", 1.0), batch_size=batch,
                        grad_accum=accum, progress=False,
                        log_every=kw.pop("log_every", 1), ckpt_every=kw.pop("ckpt_every", 0),
                        max_minutes=kw.pop("max_minutes", None), precision="fp32",
                        eval_every=0, keep_checkpoints=0)
    data = DataConfig(num_workers=0, max_bad_fraction=kw.pop("max_bad_fraction", 0.01))
    return Trainer(optim, train, data, run_dir, dist=init_distributed("cpu"), **kw)


def test_the_toy_task_satisfies_the_protocol():
    assert isinstance(ToyTask(), TrainTask)


def test_first_step_in_closed_form_and_accumulation(tmp_path):
    """AdamW's first update is ``lr * g / (|g| + eps)`` per element; at ``w = 0`` the gradient
    of the mean squared error is ``-(2/B) sum y x``, whose elements are negative here: each
    weight moves up by ``lr * warm-up factor`` (to 1e-8). Accumulating 2 micro-batches of 2 gives
    the step of one batch of 4."""
    r = _trainer(tmp_path / "a", steps=1, warmup=4).fit(ToyTask())
    w = ToyModel()
    from vlparse.train.checkpoint import load_checkpoint

    load_checkpoint(r.last_checkpoint, w, restore_rng=False)
    torch.testing.assert_close(w.w.detach(), torch.full((2,), 0.1 / 4), atol=1e-8, rtol=0)
    b = _trainer(tmp_path / "b", steps=3, warmup=0).fit(ToyTask())
    c = _trainer(tmp_path / "c", steps=3, warmup=0, batch=4, accum=2).fit(ToyTask())
    wb, wc = ToyModel(), ToyModel()
    load_checkpoint(b.last_checkpoint, wb, restore_rng=False)
    load_checkpoint(c.last_checkpoint, wc, restore_rng=False)
    torch.testing.assert_close(wb.w, wc.w, atol=1e-6, rtol=1e-6)
    assert not torch.equal(wb.w, torch.zeros(2))


def test_log_window_averages_over_reporters_and_counts():
    win = LogWindow()
    win.add({"loss": 2.0}, {"hit_correct": 1, "hit_total": 4}, images=4)
    win.add({"loss": 4.0, "mlm": 3.0}, {"hit_correct": 3, "hit_total": 4}, images=4)
    m = win.metrics()
    assert m["loss"] == 3.0 and m["mlm"] == 3.0  # mlm reported once: not halved
    assert m["hit_acc"] == 0.5 and m["images_per_s"] > 0
    win.reset()
    assert win.mean("loss") is None and "loss" not in win.metrics()


def test_run_ends_with_checkpoint_evaluation_curves_and_summary(tmp_path):
    r = _trainer(tmp_path / "run", steps=5, log_every=2, ckpt_every=2).fit(ToyTask(n=32))
    run = tmp_path / "run"
    assert [p.name for p in sorted((run / "checkpoints").glob("step_*"))] == [
        "step_00000002", "step_00000004", "step_00000005"]
    assert [rec["step"] for rec in read_jsonl(run / "log.jsonl") if "loss" in rec] == [2, 4, 5]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["task"] == "toy" and summary["images_seen"] == 20
    assert summary["eval"] == r.final_metrics and "w0" in r.final_metrics
    assert summary["epochs_completed"] == 0 and r.epoch == 0  # 8 steps per epoch
    assert (run / "loss_curves.png").stat().st_size > 1000
    assert {"config.yaml", "run_info.json", "train.log"} <= {p.name for p in run.iterdir()}
    # the model of the last step, exported with its own save_pretrained
    from safetensors.torch import load_file

    assert r.model_dir == run / "model" and summary["model_dir"] == str(run / "model")
    assert torch.equal(load_file(run / "model" / "model.safetensors")["w"],
                       load_file(r.last_checkpoint / "model.safetensors")["w"])


def test_epochs_and_time_limit_stop_the_run(tmp_path):
    r = _trainer(tmp_path / "e", steps=None, epochs=1.5).fit(ToyTask(n=10))
    assert (r.step, r.epoch) == (3, 1)  # 2 steps per epoch (10 // 4), the last 2 items unused
    r = _trainer(tmp_path / "m", steps=100, log_every=3, max_minutes=1e-6).fit(ToyTask())
    assert r.step == 3  # checked once per log window
    assert "train.max_minutes=1e-06 reached at step 3" in (tmp_path / "m" / "train.log").read_text()


def test_bad_data_verdict_comes_after_a_checkpoint(tmp_path):
    """Over the bad fraction once enough images were tried: the step is checkpointed, then the
    run stops. Below the minimum number of images the run finishes, with a warning. (Every item
    reports one bad image: after step ``s``, ``8 s`` images were tried.)"""
    every = frozenset(range(64))
    short = _trainer(tmp_path / "short", steps=3, log_every=2, min_images_for_bad_check=40)
    short.fit(ToyTask(n=64, bad=every))
    log = (tmp_path / "short" / "train.log").read_text()
    assert "Too few images" in log and (tmp_path / "short" / "summary.json").is_file()
    long = _trainer(tmp_path / "long", steps=50, log_every=4, min_images_for_bad_check=40)
    with pytest.raises(BadDataError, match="32 of 64 images were bad.*Stopped at step 8"):
        long.fit(ToyTask(n=64, bad=every))
    assert (tmp_path / "long" / "checkpoints" / "step_00000008").is_dir()
    assert not (tmp_path / "long" / "summary.json").exists()


def test_run_folder_is_owned_resumed_or_replaced(tmp_path, capsys):
    run = tmp_path / "run"
    _trainer(run, steps=2, ckpt_every=1, log_every=1).fit(ToyTask())
    before = (run / "checkpoints" / "step_00000002" / "model.safetensors").read_bytes()
    with pytest.raises(RunFolderError, match="--resume to continue it, --overwrite"):
        _trainer(run, steps=2).fit(ToyTask())
    assert (run / "checkpoints" / "step_00000002" / "model.safetensors").read_bytes() == before
    # a resume from step 1 (as after a crash before step 2's checkpoint) cuts the log back
    import shutil

    shutil.rmtree(run / "checkpoints" / "step_00000002")
    (run / "checkpoints" / "latest").write_text("step_00000001\n")
    _trainer(run, steps=3, resume=True, log_every=1, ckpt_every=1).fit(ToyTask())
    assert [r["step"] for r in read_jsonl(run / "log.jsonl") if "loss" in r] == [1, 2, 3]
    text = (run / "train.log").read_text()
    assert "--resume with a changed config: train.max_steps: 2 -> 3" in text
    assert "dropped 2 records after step 1" in text  # step 2's metrics and evaluation
    _trainer(run, steps=1, overwrite=True).fit(ToyTask())
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(moved) == 1 and (moved[0] / "checkpoints" / "step_00000003").is_dir()
    assert json.loads((run / "summary.json").read_text())["steps"] == 1


def test_resume_restores_the_random_stream(tmp_path):
    straight, split = ToyTask(), ToyTask()
    _trainer(tmp_path / "a", steps=4).fit(straight)
    _trainer(tmp_path / "b", steps=2, ckpt_every=2).fit(split)
    rest = ToyTask()
    _trainer(tmp_path / "b", steps=4, resume=True).fit(rest)
    assert split.draws + rest.draws == straight.draws
    assert not math.isclose(straight.draws[0], straight.draws[1])


# --------------------------------------------------------------------------- two processes

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "reduce",
               "reduce_scatter", "reduce_scatter_tensor", "gather", "scatter", "all_to_all",
               "all_gather_object", "broadcast_object_list", "barrier")


def _record_collectives(records: list[dict]) -> None:
    """Wrap every collective of ``torch.distributed`` to note the devices of the tensors it
    gets and the backends of its group (``cpu:gloo,cuda:gloo`` for a gloo group)."""
    import torch.distributed as tdist

    for name in COLLECTIVES:
        original = getattr(tdist, name)

        def recorded(*args, _original=original, _name=name, **kwargs):
            tensors = [t for a in (*args, *kwargs.values())
                       for t in (a if isinstance(a, (list, tuple)) else [a])
                       if isinstance(t, torch.Tensor)]
            records.append({"op": _name, "devices": sorted({str(t.device) for t in tensors}),
                            "backend": tdist.get_backend_config(kwargs.get("group"))})
            return _original(*args, **kwargs)

        setattr(tdist, name, recorded)


def _two_process_worker(rank: int, port: int, out: str, world_manifest: str, small: list) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import vlparse.train.distributed as D
    from vlparse.config import FinetuneConfig, load_config
    from vlparse.tasks.finetune import run_finetune
    from vlparse.tasks.pretrain import run_pretrain

    records: list[dict] = []
    _record_collectives(records)
    info = init_distributed("cpu")
    real_cleanup, D.cleanup = D.cleanup, lambda: None  # one process group for every run here
    root = Path(out)
    straight, split, rest = ToyTask(), ToyTask(), ToyTask()
    _trainer(root / "toy_a", steps=4, log_every=1).fit(straight)
    _trainer(root / "toy_b", steps=2, ckpt_every=2, log_every=1).fit(split)
    _trainer(root / "toy_b", steps=4, resume=True, log_every=1).fit(rest)
    fast = ["model.visual.image_size=64", "model.visual.window_size=4", "train.max_steps=2"]
    model_small = [o for o in small if not o.startswith("objectives.")]
    cfg = load_config("retrieval_world", [*model_small, *fast, "task.num_neg=1"],
                      cls=FinetuneConfig)
    run_finetune("retrieval", cfg, world_manifest, root / "ft", evaluate=False)
    run_pretrain(load_config("tiny", [*small, "train.max_steps=1"]), world_manifest,
                 root / "pre", evaluate=False)
    result = {"device": str(info.device), "records": records, "straight": straight.draws,
              "resumed": split.draws + rest.draws}
    (root / f"rank{rank}.json").write_text(json.dumps(result))
    real_cleanup()


@pytest.mark.slow
def test_two_processes_collectives_devices_dropout_and_resume(tmp_path, scene_world,
                                                              small_overrides):
    """In a 2-process gloo run of the trainer (toy task), a fine-tuning task and pre-training:
    every collective gets its tensors on the process's device, which its group has a backend
    for (on CUDA the group is ``cpu:gloo,cuda:nccl``, see test_distributed); the ranks draw
    different dropout (``seed_everything(seed, rank)``), and each rank's random stream continues
    across a resume as in a run without one (the checkpoint holds every rank's RNG state)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_two_process_worker, nprocs=2, join=True, start_method="fork",
                       args=(port, str(tmp_path), str(scene_world), small_overrides))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in ranks:
        ops = {rec["op"] for rec in r["records"]}
        assert {"all_reduce", "all_gather"} <= ops  # flags and counts; RNG states
        for rec in r["records"]:
            backends = dict(part.split(":") for part in rec["backend"].split(","))
            for device in rec["devices"]:
                assert device == r["device"], rec
                assert torch.device(device).type in backends, rec
        assert r["resumed"] == r["straight"]
    assert ranks[0]["straight"] != ranks[1]["straight"]
    assert (tmp_path / "ft" / "summary.json").is_file()
    assert (tmp_path / "pre" / "summary.json").is_file()
