"""A pre-training step hands the trainer tensors, and the trainer reads them back once per log
window: counted here by wrapping every Python-level read-back of a tensor (``item``,
``tolist``, ``float``, ``int``, ``bool``), the CPU stand-in for ``torch.cuda.set_sync_debug_mode``.
(The model's passes themselves are checked on the meta device: tests/models/test_static_step.py.)
"""

from __future__ import annotations

import pytest
import torch

from vlparse.config import load_config
from vlparse.tasks.pretrain import PretrainTask
from vlparse.train.logging import LogWindow
from vlparse.train.optim import clip_grad_norm
from vlparse.train.protocol import StepContext

READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


@pytest.fixture
def reads(monkeypatch):
    """``reads()``: read-backs of tensors to the host since the fixture was set up."""
    calls: list[str] = []
    for name in READS:
        real = getattr(torch.Tensor, name)

        def wrapped(self, *a, _real=real, _name=name, **k):
            calls.append(_name)
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    return calls


def test_micro_steps_read_nothing_back_and_the_window_reads_once(scene_world, small_overrides,
                                                                  reads):
    cfg = load_config("tiny", [*small_overrides, "model.visual.image_size=64",
                               "model.visual.window_size=4"])
    task = PretrainTask(cfg, scene_world, log=None)
    data = task.train_dataset()
    batches = [task.collate([data[i] for i in range(s, s + 4)]) for s in (0, 4, 8)]
    torch.manual_seed(0)
    model = task.build_model()
    model.set_static_shapes(True)
    window = LogWindow()
    reads.clear()
    losses, correct = [], []
    for step, batch in enumerate(batches):
        out = task.step(model, batch, StepContext(step, lambda t: t))
        out.loss.backward()
        clip_grad_norm(model, 1.0, as_tensor=True)
        window.add(out.scalars, out.counts, 4)
        losses.append(out.scalars["loss"])
        correct.append(out.counts["itm_correct"])
    assert reads == []  # three micro-steps: nothing read back
    metrics = window.metrics()
    assert 1 <= len(reads) <= 2  # one transfer of all the window's numbers
    reads.clear()
    assert metrics["loss"] == pytest.approx(sum(float(v) for v in losses) / 3, rel=1e-6)
    total = 3 * 4 * (cfg.objectives.num_pos + cfg.objectives.num_neg)
    assert metrics["itm_acc"] == pytest.approx(sum(int(c) for c in correct) / total)
    assert "mlm_acc" in metrics and "images_per_s" in metrics


def test_the_window_takes_numbers_and_tensors_alike():
    window = LogWindow()
    window.add({"loss": 2.0}, {"itm_correct": 3, "itm_total": 4}, 2)
    window.add({"loss": torch.tensor(4.0), "mlm": torch.tensor(1.5)},
               {"itm_correct": torch.tensor(1), "itm_total": 4}, 2)
    m = window.metrics()
    assert m["loss"] == 3.0 and m["mlm"] == 1.5 and m["itm_acc"] == 0.5
    assert window.mean("loss") == 3.0
