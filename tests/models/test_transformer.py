"""The multi-modal encoder: fused and explicit attention agree; padding is invisible."""

from __future__ import annotations

import math

import torch

from vlparse.models.transformer import MultiModalEncoder


def _encoder() -> MultiModalEncoder:
    return MultiModalEncoder(32, num_layers=2, num_heads=4, intermediate=64, dropout=0.0,
                             attention_dropout=0.0).eval()


def _inputs(b: int = 3, n: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(b, n, 32)
    mask = torch.ones(b, n, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return x, mask


def test_sdpa_equals_explicit_attention() -> None:
    enc = _encoder()
    x, mask = _inputs()
    with torch.no_grad():
        fused, hidden, none = enc(x, mask, output_hidden_states=True)
        explicit, _, attns = enc(x, mask, output_attentions=True)
    assert none is None and len(hidden) == 3 and hidden[0] is x
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    assert len(attns) == 2 and attns[0].shape == (3, 4, 9, 9)
    for a in attns:
        torch.testing.assert_close(a.sum(-1), torch.ones(3, 4, 9))
        assert float(a[1, :, :, 6:].abs().max()) == 0.0
        assert float(a[2, :, :, 3:].abs().max()) == 0.0


def test_explicit_weights_are_softmax_qk() -> None:
    enc = _encoder()
    x, mask = _inputs()
    _, _, attns = enc(x, mask, output_attentions=True)
    layer = enc.layers[0]
    q = layer.query(x).view(3, 9, 4, 8).transpose(1, 2)
    k = layer.key(x).view(3, 9, 4, 8).transpose(1, 2)
    ref = (q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(mask[:, None, None] == 0, -1e9)
    torch.testing.assert_close(attns[0], ref.softmax(-1))


def test_padding_does_not_change_real_tokens() -> None:
    enc = _encoder()
    x, mask = _inputs()
    out, _, _ = enc(x, mask)
    x2 = x.clone()
    x2[1, 6:] = torch.randn(3, 32) * 10
    out2, _, _ = enc(x2, mask)
    torch.testing.assert_close(out[1, :6], out2[1, :6])
    short, _, _ = enc(x[2:, :3], mask[2:, :3])
    torch.testing.assert_close(out[2, :3], short[0], atol=1e-5, rtol=1e-5)


def test_grad_checkpointing_matches() -> None:
    enc = _encoder().train()
    x, mask = _inputs()
    enc(x, mask)[0].sum().backward()
    ref = enc.layers[0].query.weight.grad.clone()
    enc.zero_grad()
    enc.set_grad_checkpointing(True)
    enc(x, mask)[0].sum().backward()
    torch.testing.assert_close(enc.layers[0].query.weight.grad, ref)


def _reference_layer(layer, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One layer written out from its parameters: separate Q, K, V products, a boolean mask."""
    b, n, d = x.shape
    h = layer.num_heads

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(b, n, h, d // h).transpose(1, 2)

    q, k, v = heads(layer.query(x)), heads(layer.key(x)), heads(layer.value(x))
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // h)
    scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
    x = layer.attn_norm(x + layer.attn_out(ctx))
    return layer.ffn_norm(x + layer.ffn_out(torch.nn.functional.gelu(layer.ffn_in(x))))


def test_fused_step_matches_the_plain_layer_in_loss_and_gradients() -> None:
    """The optimised layer (one QKV product, a float bias made once) against the plain one:
    the same outputs and gradients to 1e-5 in float32."""
    torch.manual_seed(0)
    enc = _encoder()
    x, mask = _inputs()
    x = x.requires_grad_()
    out, _, _ = enc(x, mask)
    ref = x
    for layer in enc.layers:
        ref = _reference_layer(layer, ref, mask)
    target = torch.randn_like(out)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(((out - target) ** 2).sum(), [x, *enc.parameters()])
    refs = torch.autograd.grad(((ref - target) ** 2).sum(), [x, *enc.parameters()])
    for g, r in zip(grads, refs, strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_key_padding_bias_is_aligned_and_in_the_compute_dtype(monkeypatch) -> None:
    from vlparse.models import transformer

    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    bias = transformer.key_padding_bias(mask, torch.bfloat16)
    assert bias.shape == (2, 1, 1, 3) and bias.dtype == torch.bfloat16
    assert all(s % 8 == 0 for s in bias.stride()[:-1]) and bias.stride(-1) == 1
    low = torch.finfo(torch.bfloat16).min
    assert bias[:, 0, 0].tolist() == [[0.0, 0.0, low], [0.0, low, low]]
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append(attn_mask)
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(transformer.F, "scaled_dot_product_attention", spy)
    enc = _encoder()
    x, m = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        enc(x, m)
    assert len(seen) == 2 and seen[0] is seen[1]  # made once, shared by the layers
    assert seen[0].dtype == torch.bfloat16 and seen[0].is_floating_point()
    assert all(s % 8 == 0 for s in seen[0].stride()[:-1])
