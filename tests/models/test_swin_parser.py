"""The Swin visual parser: tokens, and the captured attention checked against a brute-force
recomputation in the original token order (one window, and four shifted windows)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vlparse.config import ModelConfig, load_config
from vlparse.models.visual import SwinParser, build_visual_embedder


def tiny_model_config(*overrides: str) -> ModelConfig:
    """The built-in ``tiny`` model config with ``model.*`` overrides."""
    return load_config("tiny", [f"model.{o}" for o in overrides]).model


def _brute_force_attention(parser: SwinParser, block_in: torch.Tensor) -> torch.Tensor:
    """``(B, m, m)`` attention of the last block computed pair by pair in original coordinates.

    Token ``j`` is a key of query ``i`` iff both lie in the same shifted window and on the same
    side of the cyclic wrap (Swin's shift mask); the logit is ``q_i . k_j / sqrt(d)`` plus the
    relative position bias table entry of ``(y_i - y_j, x_i - x_j)``.
    """
    blk = parser.last_block
    attn = blk.attn
    b, h, w, c = block_in.shape
    (wh, ww), (sh, sw) = blk.window_size, blk.shift_size
    xn = F.layer_norm(block_in, (c,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
    xn = xn.reshape(b, h * w, c)
    qkv = xn @ attn.qkv.weight.T + attn.qkv.bias
    heads = attn.num_heads
    d = qkv.shape[-1] // (3 * heads)
    q, k = qkv[..., :heads * d], qkv[..., heads * d : 2 * heads * d]
    q = q.view(b, -1, heads, d).transpose(1, 2)
    k = k.view(b, -1, heads, d).transpose(1, 2)
    logits = q @ k.transpose(-2, -1) / d**0.5  # (B, H, m, m)

    ys = torch.arange(h).repeat_interleave(w)
    xs = torch.arange(w).repeat(h)
    dy = ys[:, None] - ys[None, :]
    dx = xs[:, None] - xs[None, :]
    table = attn.relative_position_bias_table  # ((2wh-1)(2ww-1), H)
    ok = (dy.abs() < wh) & (dx.abs() < ww)
    index = ((dy + wh - 1) * (2 * ww - 1) + (dx + ww - 1)).clamp(0, table.shape[0] - 1)
    logits = logits + table[index].permute(2, 0, 1)[None]
    win_y, win_x = ((ys - sh) % h) // wh, ((xs - sw) % w) // ww
    wrap_y, wrap_x = ys < sh, xs < sw
    same = (
        (win_y[:, None] == win_y[None, :]) & (win_x[:, None] == win_x[None, :])
        & (wrap_y[:, None] == wrap_y[None, :]) & (wrap_x[:, None] == wrap_x[None, :])
    )
    assert bool((ok | ~same).all())  # same-window pairs are within the bias table's range
    logits = logits.masked_fill(~same, float("-inf"))
    return logits.softmax(-1).mean(1)


def _sharpen(parser: SwinParser) -> None:
    """Make the last block's attention far from uniform so the check has teeth."""
    with torch.no_grad():
        parser.last_block.attn.qkv.weight.mul_(15.0)
        parser.last_block.attn.relative_position_bias_table.normal_(0.0, 2.0)


@pytest.mark.parametrize("window, windows, shift", [(6, 1, (0, 0)), (3, 4, (1, 1))])
def test_attention_matches_brute_force(window: int, windows: int, shift: tuple) -> None:
    cfg = tiny_model_config(f"visual.window_size={window}").visual
    parser = build_visual_embedder(cfg).eval()
    _sharpen(parser)
    assert parser.last_block.shift_size == shift
    assert parser.window_token_index().shape == (windows, 36 // windows)
    seen = []
    hook = parser.last_block.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        out = parser(images, output_attentions=True)
    hook.remove()
    assert out.tokens.shape == (2, 36, 128) and out.grid_size == (6, 6)
    expected = _brute_force_attention(parser, seen[0])
    torch.testing.assert_close(out.attention, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, 36))
    assert out.attention.max() > 5.0 / 36  # far from uniform: the check above has teeth
    nonzero = (out.attention > 1e-6).sum(-1)
    assert int(nonzero.max()) <= 36 // windows  # each row stays within its window


def test_block_diagonal_in_window_order() -> None:
    parser = build_visual_embedder(tiny_model_config("visual.window_size=3").visual).eval()
    with torch.no_grad():
        att = parser(torch.randn(1, 3, 96, 96), output_attentions=True).attention[0]
    order = parser.window_token_index().reshape(-1)
    assert sorted(order.tolist()) == list(range(36))
    permuted = att[order][:, order]
    blocks = torch.block_diag(*[torch.ones(9, 9)] * 4).bool()
    assert float(permuted[~blocks].abs().max()) < 1e-6
    assert float(permuted[blocks].min()) >= 0.0


def test_tokens_are_timm_features_and_no_attention_by_default() -> None:
    parser = SwinParser(tiny_model_config().visual).eval()
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        out = parser(images)
        ref = parser.model.forward_features(images)  # (B, h, w, c)
    assert out.attention is None
    torch.testing.assert_close(out.tokens[:, 7], ref[:, 1, 1])  # row-major: 7 = 1 * 6 + 1
    assert parser.num_tokens == 36 and parser.out_dim == 128 and parser.has_attention
    with pytest.raises(ValueError, match="image_size"):
        parser(torch.randn(1, 3, 64, 64))


def test_load_local_checkpoint_and_resize_window(tmp_path) -> None:
    src = SwinParser(tiny_model_config("visual.window_size=3").visual).eval()
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()},
              str(tmp_path / "w.safetensors"))
    torch.save({"model": src.model.state_dict()}, tmp_path / "w.pth")
    same = SwinParser(tiny_model_config("visual.window_size=3").visual).eval()
    report = same.load_pretrained(str(tmp_path / "w.pth"))
    assert report.missing == [] and report.unexpected == []
    images = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(same(images).tokens, src(images).tokens)
    bigger = SwinParser(tiny_model_config().visual)  # window 6: bias tables are resized
    report = bigger.load_pretrained(str(tmp_path / "w.safetensors"))
    assert report.missing == [] and report.unexpected == []
    torch.testing.assert_close(bigger.model.patch_embed.proj.weight,
                               src.model.patch_embed.proj.weight)
    with pytest.raises(FileNotFoundError, match="neither 'timm'"):
        bigger.load_pretrained(str(tmp_path / "nope.pth"))


def test_timm_source_error_is_explained(monkeypatch) -> None:
    import timm

    parser = SwinParser(tiny_model_config().visual)

    def offline(*_a, **_k):
        raise OSError("cannot reach huggingface.co")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="local path|/path/to"):
        parser.load_pretrained("timm")


def test_grad_checkpointing_same_gradients() -> None:
    parser = SwinParser(tiny_model_config().visual).train()
    images = torch.randn(1, 3, 96, 96)
    parser(images).tokens.square().mean().backward()
    ref = parser.model.patch_embed.proj.weight.grad.clone()
    parser.zero_grad()
    parser.set_grad_checkpointing(True)
    parser(images).tokens.square().mean().backward()
    torch.testing.assert_close(parser.model.patch_embed.proj.weight.grad, ref)
