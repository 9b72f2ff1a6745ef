"""The generalised inter-modality flow of FIBER: the share formula by hand, its reduction to the
paper's IMF on a single-stream layer, exactly 0 with every gate at 0, a hand computation of the
first fused pair from timm's and transformers' own modules, the accumulator, and ``vlparse
probe`` on a FIBER run beside a Visual Parsing run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.models.fiber.conftest import IMAGE, VOCAB, small_config
from vlparse.io.checkpoint import find_checkpoint
from vlparse.models.fiber import FiberModel
from vlparse.probing import inter_modality_flow_per_sample
from vlparse.probing.fiber_flow import (
    FiberFlowAccumulator,
    fiber_flow_per_sample,
    update_share,
)


@pytest.fixture
def model() -> FiberModel:
    torch.manual_seed(0)
    return FiberModel(small_config()).eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, IMAGE, IMAGE, generator=g)
    ids = torch.randint(3, VOCAB, (2, 9), generator=g)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 5:] = 0
    return images, ids, mask


def _set_gates(model: FiberModel, i2t: float, t2i: float) -> None:
    with torch.no_grad():
        for a, b in zip(model.i2t, model.t2i, strict=True):
            a.gate.fill_(i2t)
            b.gate.fill_(t2i)


def test_update_share_by_hand():
    s = torch.tensor([[[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]]])  # norms 5, 1, 0
    c = torch.tensor([[[0.0, 5.0], [3.0, 0.0], [0.0, 0.0]]])  # norms 5, 3, 0
    # 5 / (5 + 5) = 0.5, 3 / (3 + 1) = 0.75, and 0 for a token to which nothing is added
    assert update_share(s, c).item() == pytest.approx((0.5 + 0.75 + 0.0) / 3)
    assert update_share(s, c, torch.tensor([[1, 1, 0]])).item() == pytest.approx(0.625)
    assert update_share(s, torch.zeros_like(c)).item() == 0.0
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        update_share(s, c[:, :2])


def test_reduces_to_the_cross_modal_attention_share_of_the_imf():
    """On one single-stream attention layer with equal projected values, the share is each
    token's attention mass on the other modality, and its mean is twice the paper's IMF within
    the layer (computed by the IMF code, which mixes in the residual)."""
    g = torch.Generator().manual_seed(0)
    b, n, d = 3, 7, 5
    modality = torch.tensor([[0, 1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0, -1],
                             [0, 1, 1, 1, 0, -1, -1]])
    logits = torch.randn(b, 2, n, n, generator=g)
    logits = logits.masked_fill((modality < 0)[:, None, None, :], float("-inf"))
    weights = logits.softmax(-1)  # (B, H, N, N); padded keys get no attention
    w = weights.mean(1)  # the head average the IMF takes
    u = torch.randn(d, generator=g)  # every token's projected value
    key_real = (modality >= 0)[:, None, :]
    other = (modality[:, :, None] != modality[:, None, :]) & key_real  # (B, N, N) query, key
    same = (modality[:, :, None] == modality[:, None, :]) & key_real
    mass = (w * other).sum(-1)  # (B, N): each token's attention mass on the other modality
    s = (w * same).sum(-1)[..., None] * u  # (B, N, D): sum over own-modality keys of W_ij u
    c = mass[..., None] * u  # ... and over the other modality's keys
    real = modality >= 0
    per_token = [update_share(s[:, i : i + 1], c[:, i : i + 1]) for i in range(n)]
    assert torch.allclose(torch.stack(per_token, 1)[real], mass[real], atol=1e-6)
    imf = inter_modality_flow_per_sample([weights], modality, dtype=torch.float64)[:, 0, 0]
    assert torch.allclose(update_share(s, c, real).double(), 2 * imf, atol=1e-6)


def test_flow_is_exactly_zero_with_every_gate_at_zero(model, batch):
    assert bool((model.gates == 0).all())  # a fresh model's gates
    flow = fiber_flow_per_sample(model, *batch)
    assert flow.shape == (2, len(model.pairs), 2)
    assert torch.equal(flow, torch.zeros_like(flow))
    _set_gates(model, 0.5, -0.3)
    flow = fiber_flow_per_sample(model, *batch)
    assert bool((flow > 0).all()) and bool((flow < 1).all())
    _set_gates(model, 0.0, -0.3)  # only the text side receives
    flow = fiber_flow_per_sample(model, *batch)
    assert torch.equal(flow[..., 0], torch.zeros_like(flow[..., 0]))
    assert bool((flow[..., 1] > 0).all())


def test_the_first_pair_by_hand(model, batch):
    """Cross-attentions whose output is a constant vector ``b`` (projection weight 0): each
    token's share is ``|g| ||b|| / (|g| ||b|| + ||s_i||)``, with ``s_i`` the self-attention
    output computed here from timm's Swin blocks and transformers' own forward."""
    images, ids, mask = batch
    gi, gt = 0.7, -1.3
    with torch.no_grad():
        for cross, gate in ((model.i2t[0], gi), (model.t2i[0], gt)):
            cross.proj.weight.zero_()
            cross.proj.bias.normal_()
            cross.gate.fill_(gate)
    flow = fiber_flow_per_sample(model, images, ids, mask)[:, 0]  # (B, 2) at the first pair

    pair = model.pairs[0]
    assert (pair.image_stage, pair.image_block, pair.text_layer) == (0, 1, 1)
    swin = model.image.model
    with torch.no_grad():
        x = swin.layers[0].downsample(swin.patch_embed(images))
        x = swin.layers[0].blocks[0](x)
        block = swin.layers[0].blocks[1]
        s_img = block._attn(block.norm1(x)).flatten(1, 2).norm(dim=-1)  # (B, N)
        captured = {}
        dense = model.text.model.encoder.layer[1].attention.output.dense
        handle = dense.register_forward_hook(lambda m, a, out: captured.update(s=out))
        model.text.model(input_ids=ids, attention_mask=mask)
        handle.remove()
        s_txt = captured["s"].norm(dim=-1)  # (B, L)
    ci = abs(gi) * model.i2t[0].proj.bias.norm()
    ct = abs(gt) * model.t2i[0].proj.bias.norm()
    want_img = (ci / (ci + s_img)).mean(1)
    real = mask.bool()
    want_txt = torch.stack([(ct / (ct + s_txt[k][real[k]])).mean() for k in range(2)])
    assert torch.allclose(flow[:, 0], want_img, atol=1e-5)
    assert torch.allclose(flow[:, 1], want_txt, atol=1e-5)


def test_the_accumulator_averages_over_samples(model, batch):
    _set_gates(model, 0.2, 0.4)
    images, ids, mask = batch
    acc = FiberFlowAccumulator(len(model.pairs))
    acc.update(model, images[:1], ids[:1], mask[:1])
    acc.update(model, images[1:], ids[1:, :5], mask[1:, :5])  # its padding cut off
    whole = fiber_flow_per_sample(model, images, ids, mask).double().mean(0)
    assert acc.num_samples == 2
    assert torch.allclose(acc.compute(), whole, atol=1e-6)
    with pytest.raises(RuntimeError, match="no samples"):
        FiberFlowAccumulator(3).compute()


# a fiber_tiny run small enough for a test: 2 steps, a 3-layer random text backbone, 2 pairs
FIBER_RUN = ["train.batch_size=4", "train.progress=false", "train.log_every=1",
             "data.num_workers=0", "model.text.pretrained=null", "model.text.num_layers=3",
             "model.fusion.num_layers=2", "train.max_steps=2", "optim.warmup_steps=0"]


@pytest.fixture(scope="module")
def runs(scene_world, tmp_path_factory) -> dict[str, Path]:
    """A 2-step fiber_tiny run and a 2-step tiny (Visual Parsing) run on the scene world."""
    from tests.conftest import SMALL
    from vlparse.config import load_config
    from vlparse.tasks.pretrain import run_pretrain

    root = tmp_path_factory.mktemp("probe_runs")
    run_pretrain(load_config("fiber_tiny", FIBER_RUN), scene_world, root / "fiber",
                 evaluate=False)
    run_pretrain(load_config("tiny", [*SMALL, "train.max_steps=2"]), scene_world,
                 root / "vp", evaluate=False)
    return {"fiber": root / "fiber", "vp": root / "vp"}


def test_probe_command_on_a_fiber_run_beside_a_visual_parsing_run(runs, scene_world, tmp_path):
    from vlparse.cli import main
    from vlparse.probing.fiber_run import load_fiber_run

    out = tmp_path / "probe"
    assert main(["probe", "--checkpoint", str(runs["fiber"]), "--checkpoint", str(runs["vp"]),
                 "--label", "fiber", "--label", "vp", "--data", str(scene_world),
                 "--out", str(out), "--num-samples", "6", "--batch-size", "4"]) == 0
    flows = json.loads((out / "fiber_flow.json").read_text())
    assert set(flows) == {"fiber"}  # the Visual Parsing run went to the IMF and NMI probes
    assert set(json.loads((out / "imf.json").read_text())) == {"vp"}
    entry = flows["fiber"]
    model = load_fiber_run(runs["fiber"])[0]
    gates = model.gates.detach().double()
    assert entry["gate_i2t"] == gates[:, 0].tolist() and entry["gate_t2i"] == gates[:, 1].tolist()
    assert bool((gates != 0).all())  # two optimizer steps moved every gate
    # fiber_tiny's Swin has depths 2-2: the two blocks of stage 2 pair with text layers 2, 3
    assert entry["pairs"] == [{"image_stage": 2, "image_block": 1, "text_layer": 2},
                              {"image_stage": 2, "image_block": 2, "text_layer": 3}]
    assert entry["num_samples"] == 6 and entry["data"] == "pretrain"
    for name in ("flow_i2t", "flow_t2i"):
        assert len(entry[name]) == 2 and all(0.0 < v < 1.0 for v in entry[name])
    for name in ("fiber_flow.png", "imf_within_layer.png", "nmi.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the same gates set to 0 in a copy of the run: its flow is exactly 0
    zero = tmp_path / "zero"
    shutil.copytree(runs["fiber"], zero)
    weights = find_checkpoint(zero) / "model.safetensors"
    state = load_file(weights)
    for key in state:
        if key.endswith(".gate"):
            state[key] = torch.zeros_like(state[key])
    save_file(state, weights)
    assert main(["probe", "--checkpoint", str(zero), "--data", str(scene_world), "--out",
                 str(tmp_path / "p0"), "--num-samples", "4", "--batch-size", "4"]) == 0
    entry = json.loads((tmp_path / "p0" / "fiber_flow.json").read_text())["zero"]
    assert entry["flow_i2t"] == [0.0, 0.0] and entry["flow_t2i"] == [0.0, 0.0]


@pytest.mark.parametrize("argv, words", [
    (["--nmi-data", "vg/train"], "the modality NMI does not apply to FIBER runs"),
    (["masks"], "a FIBER run has none"),
])
def test_probes_that_do_not_apply_to_fiber_are_refused_in_one_line(runs, scene_world, tmp_path,
                                                                    capsys, argv, words):
    from vlparse.cli import main

    head, tail = (["probe", "masks"], []) if argv == ["masks"] else (["probe"], argv)
    rc = main([*head, "--checkpoint", str(runs["fiber"]), "--data", str(scene_world),
               "--out", str(tmp_path / "p"), *tail])
    err = capsys.readouterr().err
    assert rc == 2 and words in err
    assert err.count("\n") == 1 and err.startswith("vlparse: error: ")
