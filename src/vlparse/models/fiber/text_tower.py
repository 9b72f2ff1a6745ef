"""The text backbone: a transformers ``BertModel`` or ``RobertaModel`` behind a thin adapter.

The adapter owns the transformers model unchanged (``model``, built from a config without reading
any file, so checkpoints load under transformers' own key names) and runs it in two ways:

- unimodal (:meth:`TextTower.forward`): the transformers model's own ``forward``;
- layer by layer (:meth:`embed`, :meth:`layer`, :meth:`fused_layer`), so that the fused model can
  interleave the text layers with the image blocks.

The seam of the fusion is inside ``BertLayer`` / ``RobertaLayer``, between the self-attention
output's dense layer and its residual LayerNorm (``attention.output``, a ``BertSelfOutput``). A
fused layer calls the layer's own modules: ``attention.self`` (the self-attention, through
whichever attention implementation the config selects), ``attention.output.dense`` and
``dropout``, then adds the gated text-to-image cross-attention of that output,
``a = a + gate * cross(a, image)``, then ``attention.output.LayerNorm(a + input)``,
``intermediate`` and ``output`` (dense, dropout, residual, LayerNorm). With the gate at 0 this is
the stock layer's arithmetic, operation for operation.
"""

from __future__ import annotations

import functools
import inspect

from torch import Tensor, nn

from vlparse.config.fiber import FiberTextConfig
from vlparse.models.fiber.cross_attention import GatedCrossAttention

__all__ = ["TextTower", "hf_text_config"]


@functools.cache
def _no_skip(create_mask) -> dict:
    """The keyword that keeps transformers from dropping an all-real mask, where it has one."""
    params = inspect.signature(create_mask).parameters
    return {"allow_is_bidirectional_skip": False} if "allow_is_bidirectional_skip" in params else {}


def hf_text_config(cfg: FiberTextConfig):
    """The transformers ``BertConfig`` / ``RobertaConfig`` of ``cfg``."""
    from transformers import BertConfig, RobertaConfig

    cls = RobertaConfig if cfg.kind == "roberta" else BertConfig
    return cls(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        type_vocab_size=cfg.type_vocab_size,
        pad_token_id=cfg.pad_token_id,
        layer_norm_eps=cfg.layer_norm_eps,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        initializer_range=cfg.initializer_range,
    )


def _first(out):
    """A layer's hidden states (transformers 5 returns the tensor, 4 a tuple)."""
    return out[0] if isinstance(out, tuple) else out


class TextTower(nn.Module):
    """BERT / RoBERTa text backbone.

    Args:
        cfg: the text config. No weights are read here.

    Attributes:
        model: the transformers ``BertModel`` / ``RobertaModel`` (no pooler: the FIBER model has
            its own).
    """

    def __init__(self, cfg: FiberTextConfig) -> None:
        super().__init__()
        from transformers import BertModel, RobertaModel

        self.cfg = cfg
        cls = RobertaModel if cfg.kind == "roberta" else BertModel
        self.model = cls(hf_text_config(cfg), add_pooling_layer=False)

    @property
    def config(self):
        """The transformers config of ``model``."""
        return self.model.config

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.encoder.layer

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.model.embeddings.word_embeddings

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Unimodal encoding: ``(B, L)`` ids and mask -> ``(B, L, Dt)`` last hidden states (the
        transformers model's own forward)."""
        self._check(input_ids, attention_mask)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state

    def embed(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, object]:
        """Embeddings ``(B, L, Dt)`` and the self-attention mask in the form the layers take
        (:meth:`self_attention_mask`)."""
        self._check(input_ids, attention_mask)
        h = self.model.embeddings(input_ids=input_ids)
        return h, self.self_attention_mask(h, attention_mask)

    def self_attention_mask(self, h: Tensor, attention_mask: Tensor) -> object:
        """The self-attention mask of states ``h (B, L, Dt)`` with padding mask ``(B, L)``, in
        the form the layers take (built by the same transformers function the model's
        ``forward`` uses)."""
        try:
            from transformers.masking_utils import create_bidirectional_mask
        except ImportError:  # transformers 4.x: the additive (B, 1, 1, L) mask
            return self.model.get_extended_attention_mask(attention_mask, h.shape[:2])
        # without the skip, the mask of an all-real batch is not dropped: dropping it would read
        # the mask back to the host (a synchronisation in every step)
        return create_bidirectional_mask(
            config=self.model.config, inputs_embeds=h, attention_mask=attention_mask,
            **_no_skip(create_bidirectional_mask))

    def layer(self, h: Tensor, index: int, mask: object) -> Tensor:
        """Text layer ``index`` as transformers runs it: ``(B, L, Dt)`` -> ``(B, L, Dt)``."""
        return _first(self.layers[index](h, mask))

    def fused_layer(
        self,
        h: Tensor,
        index: int,
        mask: object,
        cross: GatedCrossAttention,
        image: Tensor,
        need_weights: bool = False,
        final_norm: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Text layer ``index`` with text-to-image cross-attention.

        Args:
            h: ``(B, L, Dt)`` the layer's input.
            mask: the self-attention mask from :meth:`embed`.
            cross: the pair's text-to-image cross-attention (queries ``Dt`` wide).
            image: ``(B, N, C)`` image tokens (the paired image block's input).
            need_weights: also return the cross-attention weights ``(B, H_t, L, N)``.
            final_norm: apply the layer's closing LayerNorm (``False`` only for the last layer
                when the fused path drops its final norms).

        Returns:
            ``(h', weights)``, ``h'`` ``(B, L, Dt)``.
        """
        layer = self.layers[index]
        self_out = layer.attention.output
        context = _first(layer.attention.self(h, attention_mask=mask))
        a = self_out.dropout(self_out.dense(context))
        y, weights = cross(a, image, None, need_weights)
        a = self_out.LayerNorm(a + y + h)
        out = layer.output.dropout(layer.output.dense(layer.intermediate(a))) + a
        if final_norm:
            out = layer.output.LayerNorm(out)
        return out, weights

    def _check(self, input_ids: Tensor, attention_mask: Tensor) -> None:
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"the FIBER text backbone expects input_ids and attention_mask of one shape "
                f"(B, L), got {tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
            )
        if input_ids.shape[1] > self.cfg.max_positions:
            raise ValueError(
                f"text length {input_ids.shape[1]} exceeds the position table "
                f"({self.cfg.max_positions} tokens, model.text.max_position_embeddings)"
            )

    # ------------------------------------------------------------------ weights

    def no_weight_decay(self) -> set[int]:
        """``id`` of the position and token-type tables (no weight decay)."""
        emb = self.model.embeddings
        return {id(emb.position_embeddings.weight), id(emb.token_type_embeddings.weight)}

    def build_mlm_head(self) -> nn.Module:
        """transformers' MLM head for this backbone (``BertOnlyMLMHead`` / ``RobertaLMHead``),
        its decoder weight tied to the word embeddings and its decoder bias to the head's
        ``bias``, as transformers' masked-LM models tie them. ``(..., Dt)`` -> ``(..., V)``."""
        if self.cfg.kind == "roberta":
            from transformers.models.roberta.modeling_roberta import RobertaLMHead

            head = RobertaLMHead(self.config)
            decoder, owner = head.decoder, head
        else:
            from transformers.models.bert.modeling_bert import BertOnlyMLMHead

            head = BertOnlyMLMHead(self.config)
            decoder, owner = head.predictions.decoder, head.predictions
        std = self.cfg.initializer_range
        for module in head.modules():
            if isinstance(module, nn.Linear) and module is not decoder:
                nn.init.normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(owner.bias)
        decoder.weight = self.word_embeddings.weight
        decoder.bias = owner.bias
        return head
