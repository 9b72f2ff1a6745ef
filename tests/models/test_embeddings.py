"""Embeddings: the 2-D sine table, the visual embedding and its mask token, BERT embeddings."""

from __future__ import annotations

import math

import pytest
import torch

from vlparse.models.embeddings import TextEmbedding, VisualEmbedding, sine_position_embedding_2d


def test_sine_position_embedding_layout() -> None:
    pe = sine_position_embedding_2d(3, 4, 16)
    assert pe.shape == (12, 16)
    # channel 0: sin of y at frequency 1; channel 4: cos of y; channel 8: sin of x
    y, x = 1, 2  # token 1 * 4 + 2 = 6
    torch.testing.assert_close(pe[6, 0], torch.tensor(math.sin((y + 0.5) / 3 * 2 * math.pi)))
    torch.testing.assert_close(pe[6, 4], torch.tensor(math.cos((y + 0.5) / 3 * 2 * math.pi)))
    torch.testing.assert_close(pe[6, 8], torch.tensor(math.sin((x + 0.5) / 4 * 2 * math.pi)))
    # the y half depends on the row only, the x half on the column only
    grid = pe.view(3, 4, 16)
    torch.testing.assert_close(grid[:, :1, :8].expand(3, 4, 8), grid[:, :, :8])
    torch.testing.assert_close(grid[:1, :, 8:].expand(3, 4, 8), grid[:, :, 8:])
    assert torch.cdist(pe, pe).add(torch.eye(12)).min() > 0.1  # all positions distinct
    with pytest.raises(ValueError, match="divisible by 4"):
        sine_position_embedding_2d(2, 2, 6)


def test_visual_embedding_mask_and_position() -> None:
    emb = VisualEmbedding(12, 16, (2, 3), dropout=0.0)
    feats = torch.randn(2, 6, 12)
    type_vec = torch.randn(16)
    token = torch.randn(16)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, [1, 4]] = True
    out = emb(feats, type_vec, visual_mask=mask, mask_token=token)
    pos = sine_position_embedding_2d(2, 3, 16)
    torch.testing.assert_close(out[0, 1], token + pos[1] + type_vec)
    torch.testing.assert_close(out[0, 4], token + pos[4] + type_vec)
    ref = emb.norm(emb.proj(feats)) + pos + type_vec
    torch.testing.assert_close(out[1], ref[1])
    torch.testing.assert_close(out[0, 0], ref[0, 0])
    assert "position_embeddings" not in emb.state_dict()  # fixed, not saved
    with pytest.raises(ValueError, match="grid"):
        emb(torch.randn(1, 5, 12), type_vec)


def test_text_embedding_is_bert_sum() -> None:
    emb = TextEmbedding(50, 16, 10, dropout=0.0)
    ids = torch.randint(0, 50, (2, 4))
    pos = torch.tensor([0, 1, 5, 6])
    out = emb(ids, position_ids=pos)
    raw = emb.word_embeddings(ids) + emb.position_embeddings(pos)
    raw = raw + emb.token_type_embeddings.weight[0]
    torch.testing.assert_close(out, emb.norm(raw))
    with pytest.raises(ValueError, match="position table"):
        emb(torch.zeros(1, 11, dtype=torch.long))
