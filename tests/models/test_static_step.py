"""The pre-training step without host synchronisation: a fixed-size MLM gather
(``set_static_shapes``) and the MFR gather give the same loss and gradients as boolean indexing,
the whole step (passes, loss, backward) runs on the meta device, where any operation whose
result size depends on the data, or that reads a value back to the host, fails, and
``torch.compile`` traces passes and loss as one graph, in float32 and under bf16 autocast."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from tests.host_traffic import HostTraffic
from tests.models.test_forward_pretrain import SMALL, _batch
from vlparse.config import load_config
from vlparse.models.single_stream import VisualParsingModel
from vlparse.objectives import pretrain_loss
from vlparse.tasks.pretrain import loss_weights

MFR_MODES = ("attention", "random")


def _step(model, batch, cfg) -> torch.Tensor:
    return pretrain_loss(model.forward_pretrain(batch), loss_weights(cfg, 1.0)).total


@pytest.mark.parametrize("mode", MFR_MODES)
def test_static_gather_gives_the_same_loss_and_gradients(mode):
    cfg = load_config("tiny", [*SMALL, f"objectives.mfr_mode={mode}"])
    torch.manual_seed(0)
    model = VisualParsingModel(cfg.model, 2048, objectives=cfg.objectives)
    batch = _batch(3, 4, 12, model.num_visual_tokens)
    results = []
    for static in (False, True):
        model.set_static_shapes(static)
        model.zero_grad()
        loss = _step(model, batch, cfg)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                        if p.grad is not None}))
    (plain, g_plain), (static, g_static) = results
    torch.testing.assert_close(static, plain, rtol=1e-6, atol=1e-6)
    assert g_plain.keys() == g_static.keys() and "mlm_head.dense.weight" in g_plain
    for name, grad in g_plain.items():
        torch.testing.assert_close(g_static[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    # the static output really is fixed-size: every text position of the masked pass
    out = model.forward_pretrain(batch)
    assert out.mlm_logits.shape[0] == 3 * 2 * 12 and (out.mlm_labels != -100).sum() == 13


@pytest.mark.parametrize("mode", MFR_MODES)
def test_the_static_step_runs_on_the_meta_device(mode):
    cfg = load_config("tiny", [*SMALL, f"objectives.mfr_mode={mode}"])
    with torch.device("meta"):
        model = VisualParsingModel(cfg.model, 2048, objectives=cfg.objectives)
    batch = {k: v.to("meta") for k, v in _batch(3, 4, 12, model.num_visual_tokens).items()}
    model.set_static_shapes(True)
    loss = _step(model, batch, cfg)
    loss.backward()
    assert loss.device.type == "meta"
    assert all(p.grad is not None for p in model.itm_head.parameters())
    # the proxy can fail: the boolean MLM gather reads the mask back to the host
    model.set_static_shapes(False)
    with pytest.raises((RuntimeError, NotImplementedError)):
        _step(model, batch, cfg)


@pytest.mark.parametrize("mode", MFR_MODES)
def test_the_static_step_moves_nothing_between_host_and_device(mode):
    """The CPU stand-in for CUDA's sync debug mode: on the CPU, no read-back, no data-sized
    output and no tensor made from host data; built on a device (``meta`` here), no operation
    touches a tensor left on the host (a CPU index into a device map is a copy that
    synchronises)."""
    cfg = load_config("tiny", [*SMALL, f"objectives.mfr_mode={mode}"])
    torch.manual_seed(0)
    model = VisualParsingModel(cfg.model, 2048, objectives=cfg.objectives)
    model.set_static_shapes(True)
    batch = _batch(3, 4, 12, model.num_visual_tokens)
    with HostTraffic() as traffic:
        _step(model, batch, cfg).backward()
    assert traffic.events == []
    with torch.device("meta"):
        model = VisualParsingModel(cfg.model, 2048, objectives=cfg.objectives)
    model.set_static_shapes(True)
    batch = {k: v.to("meta") for k, v in batch.items()}
    with HostTraffic(host_device=True) as traffic:
        _step(model, batch, cfg).backward()
    assert traffic.events == []


@pytest.mark.parametrize(("mode", "amp"), [("attention", True), ("random", False)],
                         ids=["attention-bf16", "random-fp32"])
def test_the_static_step_compiles_as_one_graph(mode, amp, monkeypatch):
    """The step that ``benchmarks/pretrain_throughput.py`` compiles whole for its
    ``vlparse-*-static-compile`` variants, with bf16 autocast (on the CPU here) or without:
    torch.compile(fullgraph=True) traces passes and loss as one graph with either MFR mode, three
    steps with an optimiser update and a new batch each reuse that graph (no recompile), and
    each loss equals eager's. Traced only (a counting backend that runs the traced graph as it
    is): no code is generated.

    Attention-guided MFR used to break the graph where the Swin parser registered its attention
    hook inside the forward. On CUDA, Dynamo also broke it wherever the step called
    ``torch.amp.is_autocast_available`` (the OT before turning autocast off, the encoder before
    reading the autocast dtype); the CPU build traces that call, so here it is made to break the
    graph as it did there, and the step must not call it."""
    real = torch.amp.is_autocast_available

    def breaks_the_graph(device_type: str) -> bool:
        torch._dynamo.graph_break()
        return real(device_type)

    monkeypatch.setattr(torch.amp, "is_autocast_available", breaks_the_graph)
    cfg = load_config("tiny", [*SMALL, f"objectives.mfr_mode={mode}"])
    torch.manual_seed(0)
    model = VisualParsingModel(cfg.model, 2048, objectives=cfg.objectives)
    model.set_static_shapes(True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    counter = CompileCounter()
    compiled = torch.compile(lambda b: _step(model, b, cfg), backend=counter, fullgraph=True)
    for seed in range(3):
        batch = _batch(2, 4, 12, model.num_visual_tokens, seed=seed)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = compiled(batch)
            with torch.no_grad():
                eager = _step(model, batch, cfg)
        # the traced graph runs the same operations as eager: equal up to rounding
        torch.testing.assert_close(loss.detach(), eager, rtol=1e-5, atol=1e-5)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert counter.frame_count == 1, f"{counter.frame_count} graphs: a graph break or recompile"

