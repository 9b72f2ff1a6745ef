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
