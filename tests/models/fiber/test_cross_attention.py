"""Cross-attention against brute-force references.

- The module itself against a loop over queries and heads written from the formula.
- The fused Swin block (cross-attention on the merged grid) against the released code's placement:
  inside timm's window attention, on each (shifted, padded) window, with the text keys and values
  repeated for every window, the rest of the block being timm's own forward.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlparse.models.fiber import FiberModel, GatedCrossAttention


def _brute_force(cross: GatedCrossAttention, x, context, mask) -> torch.Tensor:
    """``gate * proj(concat_h softmax_j(q_h(x_i) . k_h(c_j) / sqrt(d)) v_h(c_j))`` one query
    and one head at a time, over the real context tokens only."""
    b, n, dim = x.shape
    heads, d = cross.num_heads, dim // cross.num_heads
    out = torch.zeros(b, n, dim, dtype=torch.float64)
    wq, bq = cross.query.weight.double(), cross.query.bias.double()
    wkv, bkv = cross.key_value.weight.double(), cross.key_value.bias.double()
    norm = cross.norm
    for i in range(b):
        real = [j for j in range(context.shape[1]) if mask is None or mask[i, j]]
        for t in range(n):
            xt = x[i, t].double()
            if isinstance(norm, torch.nn.LayerNorm):
                xt = F.layer_norm(xt, (dim,), norm.weight.double(), norm.bias.double(), norm.eps)
            q = wq @ xt + bq
            parts = []
            for h in range(heads):
                sl = slice(h * d, (h + 1) * d)
                logits, values = [], []
                for j in real:
                    kv = wkv @ context[i, j].double() + bkv
                    logits.append(float(q[sl] @ kv[:dim][sl]) / math.sqrt(d))
                    values.append(kv[dim:][sl])
                p = torch.tensor(logits, dtype=torch.float64).softmax(0)
                parts.append(sum(pk * vk for pk, vk in zip(p, values, strict=True)))
            y = cross.proj.weight.double() @ torch.cat(parts) + cross.proj.bias.double()
            out[i, t] = cross.gate.double() * y
    return out


@pytest.mark.parametrize("query_norm", [True, False])
@pytest.mark.parametrize("need_weights", [False, True])
def test_cross_attention_equals_a_loop_over_tokens(query_norm: bool, need_weights: bool) -> None:
    cross = GatedCrossAttention(8, 6, 2, query_norm=query_norm).eval()
    with torch.no_grad():
        cross.gate.fill_(0.7)
        for layer in (cross.query, cross.key_value):  # peaked attention, not near-uniform
            layer.weight.normal_(std=0.7)
            layer.bias.normal_()
        if query_norm:
            cross.norm.weight.uniform_(0.5, 1.5)
            cross.norm.bias.normal_()
    x, context = torch.randn(2, 5, 8), torch.randn(2, 4, 6)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    y, weights = cross(x, context, mask, need_weights=need_weights)
    with torch.no_grad():
        ref = _brute_force(cross, x, context, mask)
    torch.testing.assert_close(y.double(), ref,
                               atol=1e-5, rtol=1e-5)
    if need_weights:
        assert weights.shape == (2, 2, 5, 4)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 5))
        assert bool((weights[1, :, :, 2:] == 0).all())  # padding gets no attention
    else:
        assert weights is None


def test_padding_does_not_change_the_output() -> None:
    cross = GatedCrossAttention(8, 6, 2).eval()
    with torch.no_grad():
        cross.gate.fill_(1.0)
    x, context = torch.randn(1, 3, 8), torch.randn(1, 2, 6)
    padded = torch.cat([context, 100 * torch.randn(1, 3, 6)], dim=1)
    y, _ = cross(x, context)
    y_pad, _ = cross(x, padded, torch.tensor([[1, 1, 0, 0, 0]]))
    torch.testing.assert_close(y_pad, y, atol=1e-6, rtol=1e-6)


def test_a_zero_gate_gives_exact_zeros_and_its_gradient() -> None:
    cross = GatedCrossAttention(8, 6, 2)
    x, context = torch.randn(2, 3, 8), torch.randn(2, 4, 6)
    y, _ = cross(x, context)
    assert torch.equal(y, torch.zeros_like(y))
    y.sum().backward()
    assert cross.gate.grad is not None and cross.gate.grad.abs() > 0


def _windowed_reference(block, cross, x, text, mask) -> torch.Tensor:
    """timm's block forward with the cross-attention added inside its window attention, on each
    window's projected self-attention output, text keys/values repeated per window."""

    def add_cross(_module, _args, out):
        windows = out.shape[0] // x.shape[0]
        text_w = text.repeat_interleave(windows, dim=0)
        mask_w = mask.repeat_interleave(windows, dim=0)
        return out + cross(out, text_w, mask_w)[0]

    handle = block.attn.register_forward_hook(add_cross)
    try:
        return block(x)
    finally:
        handle.remove()


def _sharpen(cross: GatedCrossAttention, gate: float) -> None:
    """Open the gate and enlarge the weights so that attention is far from uniform."""
    with torch.no_grad():
        cross.gate.fill_(gate)
        for layer in (cross.query, cross.key_value):
            layer.weight.normal_(std=0.7)


@pytest.mark.parametrize("stage, index", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_fused_block_equals_cross_attention_inside_shifted_padded_windows(
    make_config, stage: int, index: int
) -> None:
    model = FiberModel(make_config(fused=4)).eval()
    tower = model.image
    block = tower.stages[stage].blocks[index]
    assert block.window_size == (4, 4) and (block.shift_size != (0, 0)) == (index == 1)
    cross = model.i2t[2 * stage + index]
    _sharpen(cross, 0.8)
    with torch.no_grad():
        h = w = block.input_resolution[0]  # 10 or 5: windows of 4 need padding
        x = torch.randn(2, h, w, block.dim)
        text = torch.randn(2, 7, 16)
        mask = torch.tensor([[1] * 7, [1, 1, 1, 0, 0, 0, 0]])
        ours, _ = tower.fused_block(x, stage, index, cross, text, mask)
        ref = _windowed_reference(block, cross, x, text, mask)
        stock = block(x)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert (ours - stock).abs().max() > 1e-3  # the cross-attention did contribute


def test_stochastic_depth_wraps_self_and_cross_attention(make_config) -> None:
    """The block's ``drop_path1`` receives the self-attention output plus the gated
    cross-attention (``x + drop_path(attn + gate * y)``), so a dropped path drops both."""
    model = FiberModel(make_config()).eval()
    block = model.image.stages[1].blocks[1]
    seen: list[torch.Tensor] = []
    block.drop_path1 = torch.nn.Identity()
    block.drop_path1.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    cross = model.i2t[-1]
    with torch.no_grad():
        cross.gate.fill_(0.5)
        x = torch.randn(1, 5, 5, 16)
        text, mask = torch.randn(1, 4, 16), torch.ones(1, 4)
        model.image.fused_block(x, 1, 1, cross, text, mask)
        attn = block._attn(block.norm1(x))  # timm's shifted-window self-attention alone
        expected = attn + cross(attn.reshape(1, 25, 16), text, mask)[0].view(1, 5, 5, 16)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("final_norm", [True, False])
def test_fused_text_layer_adds_cross_attention_before_the_residual_norm(
    make_config, batch, kind: str, final_norm: bool
) -> None:
    """Against transformers' own layer forward with the gated cross-attention added to the
    output of ``attention.output.dense`` by a hook (so before its dropout, residual and
    LayerNorm), and without the closing LayerNorm when ``final_norm`` is off."""
    model = FiberModel(make_config(kind)).eval()
    _, ids, mask = batch
    cross = model.t2i[1]
    _sharpen(cross, 0.6)
    layer = model.text.layers[2]
    image = torch.randn(2, 25, 16)
    with torch.no_grad():
        h, self_mask = model.text.embed(ids, mask)
        h = h + torch.randn_like(h)
        ours, _ = model.text.fused_layer(h, 2, self_mask, cross, image, final_norm=final_norm)
        handle = layer.attention.output.dense.register_forward_hook(
            lambda _m, _a, out: out + cross(out, image)[0]
        )
        norm = layer.output.LayerNorm
        if not final_norm:
            layer.output.LayerNorm = torch.nn.Identity()
        try:
            ref = layer(h, self_mask)
        finally:
            handle.remove()
            layer.output.LayerNorm = norm
        ref = ref[0] if isinstance(ref, tuple) else ref
        stock = layer(h, self_mask)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert (ours - (stock[0] if isinstance(stock, tuple) else stock)).abs().max() > 1e-3
