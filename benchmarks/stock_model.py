"""The baseline of the throughput benchmark: the Visual Parsing architecture assembled from stock
timm and transformers modules (timm Swin with its eager attention, Hugging Face ``BertModel`` with
``attn_implementation="eager"``), exposing the same small interface as
:class:`vlparse.models.single_stream.VisualParsingModel` so that the same pre-training passes
(borrowed from it) and the same loss drive both.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import BertConfig, BertModel

from vlparse.config import ModelConfig, ObjectiveConfig
from vlparse.models.embeddings import sine_position_embedding_2d
from vlparse.models.outputs import FusionOutput, VisualOutput
from vlparse.models.single_stream import VisualParsingModel
from vlparse.models.visual.swin_parser import SwinParser


class StockVisualParsing(nn.Module):
    """Stock-module equivalent of the Visual Parsing model (same sizes, same sequence layout).

    ``attn``: ``"eager"`` (explicit softmax attention in timm and BERT) or ``"sdpa"``.
    """

    # the pre-training passes of the vlparse model, run on these stock modules
    forward_pretrain = VisualParsingModel.forward_pretrain
    masked_lm = VisualParsingModel.masked_lm
    _masked_pass = VisualParsingModel._masked_pass
    static_shapes = False
    set_static_shapes = VisualParsingModel.set_static_shapes

    def __init__(
        self,
        cfg: ModelConfig,
        vocab_size: int,
        attn: str = "eager",
        cls_id: int = 101,
        sep_id: int = 102,
        objectives: ObjectiveConfig | None = None,
    ) -> None:
        super().__init__()
        self.objectives = objectives if objectives is not None else ObjectiveConfig()
        t = cfg.text
        self.visual = SwinParser(cfg.visual)
        for module in self.visual.modules():  # timm's eager or fused attention path
            if hasattr(module, "fused_attn"):
                module.fused_attn = attn != "eager"
        c, d = self.visual.out_dim, t.hidden_size
        self.bert = BertModel(
            BertConfig(
                vocab_size=vocab_size,
                hidden_size=d,
                num_hidden_layers=t.num_layers,
                num_attention_heads=t.num_heads,
                intermediate_size=t.intermediate_size,
                hidden_dropout_prob=t.dropout,
                attention_probs_dropout_prob=t.attention_dropout,
                max_position_embeddings=t.max_text_len + 2,
                attn_implementation=attn,
            ),
            add_pooling_layer=False,
        )
        self.visual_proj = nn.Sequential(nn.Linear(c, d), nn.LayerNorm(d))
        h, w = self.visual.grid_size
        self.register_buffer("visual_pos", sine_position_embedding_2d(h, w, d), persistent=False)
        self.mask_token = nn.Parameter(torch.zeros(d))
        self.cls_id, self.sep_id = cls_id, sep_id
        self.mlm_transform = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d))
        self.mlm_decoder = nn.Linear(d, vocab_size)
        self.mlm_decoder.weight = self.bert.embeddings.word_embeddings.weight
        self.itm_head = nn.Linear(d, 2)
        self.mfr_head = nn.Linear(d, c)

    @property
    def num_visual_tokens(self) -> int:
        return self.visual.num_tokens

    def mlm_head(self, x: Tensor) -> Tensor:
        return self.mlm_decoder(self.mlm_transform(x))

    def encode_image(self, images: Tensor, output_attentions: bool = False) -> VisualOutput:
        return self.visual(images, output_attentions=output_attentions)

    def fuse(
        self,
        visual_tokens: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        visual_mask: Tensor | None = None,
        **_: object,
    ) -> FusionOutput:
        b, m = visual_tokens.shape[:2]
        emb = self.bert.embeddings.word_embeddings
        v = self.visual_proj(visual_tokens)
        if visual_mask is not None:
            v = torch.where(visual_mask[..., None], self.mask_token.to(v.dtype), v)
        v = v + self.visual_pos.to(v.dtype)
        cls = emb(input_ids.new_full((b, 1), self.cls_id))
        sep = emb(input_ids.new_full((b, 1), self.sep_id))
        x = torch.cat([cls, v, sep, emb(input_ids)], dim=1)
        types = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
        types[:, 1 : 1 + m] = 1
        pos = torch.cat(
            [
                torch.zeros(b, 1, dtype=torch.long, device=x.device),
                torch.zeros(b, m, dtype=torch.long, device=x.device),
                torch.arange(1, input_ids.shape[1] + 2, device=x.device).expand(b, -1),
            ],
            dim=1,
        )
        x = x + self.bert.embeddings.token_type_embeddings(types)
        x = x + self.bert.embeddings.position_embeddings(pos)
        x = self.bert.embeddings.dropout(self.bert.embeddings.LayerNorm(x))
        mask = torch.cat([attention_mask.new_ones(b, 1 + m + 1), attention_mask], dim=1)
        ext = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        hidden = self.bert.encoder(x, attention_mask=ext).last_hidden_state
        return FusionOutput(hidden, mask, m)
