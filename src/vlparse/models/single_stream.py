"""The Visual Parsing model: a visual parser feeding a single-stream BERT-style Transformer.

The fused sequence is ``[CLS] v_1 .. v_m [SEP] W`` where ``W`` is the tokenizer's text part
(words, its own trailing ``[SEP]``, padding; :class:`~vlparse.models.processor.
VisualParsingProcessor` makes it). Text positions: ``[CLS]`` = 0, ``[SEP]`` = 1, ``W`` = 2, 3,
...; visual tokens carry a fixed 2-D sine position instead. Token types: 0 for ``[CLS]``,
``[SEP]`` and ``W``, 1 for the visual tokens (one shared table).

Pre-training passes (:meth:`VisualParsingModel.forward_pretrain`, paper section 4.1): every image
comes with ``P`` matched and ``N`` unmatched captions; the visual parser runs once per image and
its tokens serve the ``P + N`` pairs. ITM and VLA see clean inputs of all pairs; a second pass
over the ``P`` matched pairs carries the MLM-masked text and the MFR-masked visual tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vlparse.config import ModelConfig, ObjectiveConfig, OptimConfig, from_dict, to_dict
from vlparse.models.base import PretrainedMixin, role_param_groups
from vlparse.models.bert_init import load_bert
from vlparse.models.embeddings import VISION_TYPE, TextEmbedding, VisualEmbedding
from vlparse.models.heads import MatchHead, MFRHead, MLMHead
from vlparse.models.outputs import FusionOutput, PretrainOutput, VisualOutput
from vlparse.models.transformer import MultiModalEncoder
from vlparse.models.visual import build_visual_embedder
from vlparse.models.visual_masking import mfr_visual_mask, num_mfr_tokens
from vlparse.models.weights import LoadReport
from vlparse.objectives.itm import itm_labels
from vlparse.objectives.ot import ot_distance
from vlparse.processing.tokenization import IGNORE_INDEX

__all__ = ["FAMILY", "PASS_FIELDS", "VisualParsingModel"]

FAMILY = "visual_parsing"

PASS_FIELDS = ("num_pos", "num_neg", "vla_weight", "ipot_beta", "ipot_iters", "mfr_mode",
               "mfr_k", "mfr_ratio", "mfr_reduction")
"""The objectives settings that shape :meth:`VisualParsingModel.forward_pretrain` (saved in
``config.json``); loss weights and schedules belong to the task, not the model."""

SAVED_TOKENIZER = "."
"""``text.tokenizer`` in a saved ``config.json`` when the tokenizer is a local folder: the
tokenizer saved beside the model (``from_pretrained`` puts the folder's path back)."""


class VisualParsingModel(PretrainedMixin, nn.Module):
    """Visual parser + multi-modal Transformer + pre-training heads.

    Args:
        cfg: the model config.
        vocab_size: ``V`` of the tokenizer.
        cls_token_id: id of ``[CLS]`` (bert-base-uncased: 101).
        sep_token_id: id of ``[SEP]`` (bert-base-uncased: 102).
        objectives: the settings of the pre-training passes (:data:`PASS_FIELDS` are read);
            default :class:`~vlparse.config.ObjectiveConfig`'s.

    No weights are read here; call :meth:`load_pretrained` or use :meth:`from_pretrained`.
    """

    family = FAMILY
    static_shapes: bool = False
    """Set by :meth:`set_static_shapes`."""

    def __init__(
        self,
        cfg: ModelConfig,
        vocab_size: int,
        cls_token_id: int = 101,
        sep_token_id: int = 102,
        objectives: ObjectiveConfig | None = None,
    ) -> None:
        super().__init__()
        t = cfg.text
        for name, tid in (("cls_token_id", cls_token_id), ("sep_token_id", sep_token_id)):
            if not 0 <= tid < vocab_size:
                raise ValueError(f"{name}={tid} is outside the vocabulary (size {vocab_size})")
        self.cfg = cfg
        self.objectives = objectives if objectives is not None else ObjectiveConfig()
        self.vocab_size = vocab_size
        self.cls_token_id = cls_token_id
        self.sep_token_id = sep_token_id
        self.max_text_len = t.max_text_len

        self.visual = build_visual_embedder(cfg.visual)
        self.visual_embed = VisualEmbedding(
            self.visual.out_dim, t.hidden_size, self.visual.grid_size, t.layer_norm_eps, t.dropout
        )
        std = t.initializer_range
        self.text_embed = TextEmbedding(
            vocab_size, t.hidden_size, t.max_text_len + 2, t.layer_norm_eps, t.dropout,
            init_std=std,
        )
        self.encoder = MultiModalEncoder(
            t.hidden_size, t.num_layers, t.num_heads, t.intermediate_size, t.dropout,
            t.attention_dropout, t.layer_norm_eps, init_std=std,
        )
        self.mlm_head = MLMHead(t.hidden_size, vocab_size, t.layer_norm_eps, init_std=std)
        self.itm_head = MatchHead(t.hidden_size, init_std=std)
        self.mfr_head = MFRHead(t.hidden_size, self.visual.out_dim, init_std=std)
        self.visual_mask_token = nn.Parameter(torch.zeros(t.hidden_size))
        nn.init.normal_(self.visual_mask_token, std=std)
        self.mlm_head.decoder.weight = self.text_embed.word_embeddings.weight  # tied

    # ------------------------------------------------------------------ properties

    @property
    def num_visual_tokens(self) -> int:
        """``m``."""
        return self.visual.num_tokens

    @property
    def visual_dim(self) -> int:
        """``c``."""
        return self.visual.out_dim

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Gradient checkpointing in the visual parser and the multi-modal Transformer."""
        self.visual.set_grad_checkpointing(enable)
        self.encoder.set_grad_checkpointing(enable)

    def set_static_shapes(self, enable: bool = True) -> None:
        """Make the pre-training passes free of data-dependent shapes: the MLM logits come at
        every text position of the masked pass, labelled -100 where nothing was masked, instead
        of at the masked positions only. The loss is the same; the step then never reads a mask
        back to the host, so ``torch.compile`` can take the whole step as one graph and CUDA
        graphs can replay it, at the price of the MLM head on every text position (about 1 % of
        a ``paper`` step's FLOPs)."""
        self.static_shapes = enable

    # ------------------------------------------------------------------ forward

    def encode_image(self, images: Tensor, output_attentions: bool = False) -> VisualOutput:
        """``(B, 3, H, W)`` -> :class:`VisualOutput` (tokens ``(B, m, c)``, attention
        ``(B, m, m)`` when asked)."""
        return self.visual(images, output_attentions=output_attentions)

    def _check_text(self, b: int, input_ids: Tensor, attention_mask: Tensor,
                    cls_check: bool = True) -> None:
        """Raise ``ValueError`` unless ``input_ids`` is a ``(b, L)`` text part ``W`` (and, with
        ``cls_check``, none starts with ``[CLS]``)."""
        if input_ids.dim() != 2 or input_ids.shape[0] != b:
            raise ValueError(
                f"fuse: input_ids must be (B, L) with B={b} (the visual batch), "
                f"got {tuple(input_ids.shape)}; repeat the visual tokens per text first"
            )
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"fuse: attention_mask {tuple(attention_mask.shape)} must match input_ids "
                f"{tuple(input_ids.shape)}"
            )
        if input_ids.shape[1] > self.max_text_len:
            raise ValueError(f"fuse: text length {input_ids.shape[1]} exceeds "
                             f"text.max_text_len={self.max_text_len}")
        if cls_check and input_ids.shape[1] and bool((input_ids[:, 0] == self.cls_token_id).any()):
            raise ValueError(
                "fuse: input_ids start with [CLS], but the model puts [CLS] before the visual "
                "tokens itself; give the text part W only (word pieces, [SEP], padding), as "
                "VisualParsingProcessor or encode_texts make it (add_special_tokens=False)"
            )

    def fuse(
        self,
        visual_tokens: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        visual_mask: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        check_text: bool = True,
    ) -> FusionOutput:
        """Run the multi-modal Transformer over ``[CLS] V [SEP] W``.

        Args:
            visual_tokens: ``(B, m, c)`` from :meth:`encode_image`.
            input_ids: ``(B, L)`` the text part ``W`` (no ``[CLS]``: rejected),
                ``L <= max_text_len``.
            attention_mask: ``(B, L)`` 1 for real text tokens, 0 for padding.
            visual_mask: ``(B, m)`` bool; ``True`` tokens are replaced by the learned
                ``visual_mask_token`` (in ``D`` space, before position and type embeddings).
            output_attentions: return ``(B, H, N, N)`` per layer.
            output_hidden_states: return ``(B, N, D)`` per layer plus the embeddings.
            check_text: refuse texts that start with ``[CLS]`` (a host synchronisation). The
                pre-training passes turn it off: their texts come from the collator, and BERT's
                masking may replace a first word piece by any token, ``[CLS]`` included.

        Returns:
            :class:`FusionOutput` with ``N = 2 + m + L``.
        """
        b, m = visual_tokens.shape[:2]
        self._check_text(b, input_ids, attention_mask, check_text)
        length = input_ids.shape[1]
        device = input_ids.device
        # filled on the device (a tensor built from a list would be a copy from the host)
        ids = torch.cat([input_ids.new_full((b, 1), self.cls_token_id),
                         input_ids.new_full((b, 1), self.sep_token_id), input_ids], dim=1)
        text = self.text_embed(ids, position_ids=torch.arange(2 + length, device=device))
        vis = self.visual_embed(
            visual_tokens,
            self.text_embed.type_embedding(VISION_TYPE),
            visual_mask=visual_mask,
            mask_token=self.visual_mask_token,
        )
        x = torch.cat([text[:, :1], vis.to(text.dtype), text[:, 1:]], dim=1)  # (B, N, D)
        ones = attention_mask.new_ones(b, m + 1)
        mask = torch.cat([ones[:, :1], ones, attention_mask], dim=1)  # (B, N)
        last, hidden, attns = self.encoder(
            x, mask, output_attentions=output_attentions, output_hidden_states=output_hidden_states
        )
        return FusionOutput(
            last_hidden_state=last,
            attention_mask=mask,
            num_visual=m,
            hidden_states=hidden,
            attentions=attns,
        )

    def forward(
        self,
        images: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        visual_mask: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> FusionOutput:
        """``fuse(encode_image(images).tokens, input_ids, attention_mask, ...)``; one text per
        image (``images (B, 3, H, W)``, ``input_ids (B, L)``)."""
        tokens = self.encode_image(images).tokens
        return self.fuse(
            tokens, input_ids, attention_mask, visual_mask, output_attentions, output_hidden_states
        )

    # ------------------------------------------------------------------ passes

    def itm_logits(self, visual_tokens: Tensor, input_ids: Tensor,
                   attention_mask: Tensor) -> Tensor:
        """``(T, 2)`` matching logits (class 1 = matched) of ``T`` pairs: tokens ``(T, m, c)``,
        texts ``(T, L)``."""
        return self.itm_head(self.fuse(visual_tokens, input_ids, attention_mask).cls)

    def masked_lm(
        self,
        visual_tokens: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        labels: Tensor,
        visual_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, FusionOutput]:
        """The masked pass: MLM logits at the masked positions.

        Args:
            visual_tokens: ``(T, m, c)``; input_ids, attention_mask: ``(T, L)`` masked texts.
            labels: ``(T, L)`` original ids at the masked positions, -100 elsewhere.
            visual_mask: ``(T, m)`` MFR mask, or ``None``.

        Returns:
            ``(logits (K, V), targets (K,), the fused output)`` over the ``K`` masked positions
            (with :meth:`set_static_shapes`: over all ``T * L`` positions, -100 where not
            masked).
        """
        out = self.fuse(visual_tokens, input_ids, attention_mask, visual_mask=visual_mask,
                        check_text=False)
        if self.static_shapes:  # every position, -100 where not masked: no data-dependent size
            return self.mlm_head(out.text.flatten(0, 1)), labels.flatten(), out
        selected = labels != IGNORE_INDEX
        return self.mlm_head(out.text[selected]), labels[selected], out

    def forward_pretrain(self, batch: dict[str, Tensor], *, run_masked: bool = True
                         ) -> PretrainOutput:
        """The pre-training passes of one batch (see the module docstring).

        Args:
            batch: from :class:`~vlparse.data.collate.PretrainCollator`: ``image (B, 3, S, S)``,
                ``input_ids`` / ``attention_mask`` ``(B, P+N, L)`` (matched captions first),
                ``mlm_input_ids`` / ``mlm_labels`` ``(B, P, L)``, ``mfr_noise (B, m)``.
            run_masked: run the masked pass (MLM and MFR); ``False`` skips it, e.g. while the
                MLM weight is 0 (about a quarter of a step's cost).

        Returns:
            :class:`PretrainOutput` with ITM logits and labels of the ``B (P + N)`` pairs, the
            VLA distances (when ``vla_weight > 0``), MLM logits and labels at the masked
            positions of the matched pairs and the MFR predictions and targets (with the masked
            pass and ``mfr_mode != "off"``), and ``diagnostics["visual_spread"]`` (``B > 1``).
        """
        o = self.objectives
        images = batch["image"]
        bsz, n_txt, seq = batch["input_ids"].shape
        if n_txt != o.num_pos + o.num_neg:
            raise ValueError(f"batch has {n_txt} texts per image, config expects "
                             f"{o.num_pos}+{o.num_neg}")
        vis = self.encode_image(images, output_attentions=o.mfr_mode == "attention")
        tokens = vis.tokens
        labels = itm_labels(bsz, o.num_pos, o.num_neg, device=images.device)
        out = self.fuse(tokens.repeat_interleave(n_txt, 0), batch["input_ids"].reshape(-1, seq),
                        batch["attention_mask"].reshape(-1, seq), check_text=False)
        result = PretrainOutput(itm_logits=self.itm_head(out.cls), itm_labels=labels)
        if o.vla_weight > 0:
            text_mask = batch["attention_mask"].reshape(-1, seq).bool()
            vis_mask = torch.ones(out.visual.shape[:2], dtype=torch.bool, device=images.device)
            result.vla_distance = ot_distance(out.visual.float(), out.text.float(), vis_mask,
                                              text_mask, beta=o.ipot_beta, iters=o.ipot_iters)
        if run_masked:
            vmask = mfr_visual_mask(o.mfr_mode, o.mfr_k, o.mfr_ratio, batch["mfr_noise"],
                                    vis.attention)
            self._masked_pass(tokens, vmask, batch, result)
        # std of the parser's tokens across the images of the batch: near 0 means the parser has
        # collapsed to one output whatever the image
        if bsz > 1:
            result.diagnostics["visual_spread"] = tokens.detach().float().std(0).mean()
        return result

    def _masked_pass(self, tokens: Tensor, vmask: Tensor | None, batch: dict[str, Tensor],
                     result: PretrainOutput) -> None:
        """MLM (and MFR when ``vmask`` is given) on the ``P`` matched pairs, into ``result``."""
        p = self.objectives.num_pos
        seq = batch["input_ids"].shape[-1]
        vmask_m = None if vmask is None else vmask.repeat_interleave(p, 0)
        result.mlm_logits, result.mlm_labels, out = self.masked_lm(
            tokens.repeat_interleave(p, 0),
            batch["mlm_input_ids"][:, :p].reshape(-1, seq),
            batch["attention_mask"][:, :p].reshape(-1, seq),
            batch["mlm_labels"][:, :p].reshape(-1, seq),
            visual_mask=vmask_m,
        )
        if vmask_m is not None:
            # every row masks the same number of tokens, so a gather of fixed size picks them in
            # the order a boolean index would, without reading the mask back to the host
            o = self.objectives
            k = num_mfr_tokens(tokens.shape[1], o.mfr_k, o.mfr_ratio)
            where = vmask_m.float().argsort(dim=1, descending=True, stable=True)[:, :k]
            result.mfr_pred = self.mfr_head(_gather_tokens(out.visual, where))
            result.mfr_target = _gather_tokens(tokens.detach().repeat_interleave(p, 0), where)
            # Eq. 9 per matched pair ("sum"), or also per channel ("mean_channel"):
            # vlparse.objectives.mfr
            per = tokens.shape[-1] if self.objectives.mfr_reduction == "mean_channel" else 1
            result.mfr_num_samples = tokens.shape[0] * p * per

    # ------------------------------------------------------------------ optimisation

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        """AdamW parameter groups by role: ``visual`` (the parser, at ``optim.visual_lr``) and
        ``fusion`` (embeddings, Transformer, heads, mask token, at ``optim.lr``), each split into
        decay and no-decay (biases, norms, position / type / relative-position tables, the mask
        token; :func:`~vlparse.models.base.role_param_groups`). Every trainable parameter appears
        in exactly one group; empty groups are left out."""
        roles = [("visual", ["visual"], optim.visual_lr), ("fusion", None, optim.lr)]
        return role_param_groups(self, roles, optim.weight_decay)

    # ------------------------------------------------------------------ weights

    def load_pretrained(self) -> dict[str, LoadReport]:
        """Load ``cfg.visual.pretrained`` into the parser and ``cfg.text.pretrained`` (a BERT
        checkpoint) into the text embeddings, the encoder and, if present, the MLM head.

        Returns:
            ``{"visual": report, "text": report}`` for the parts that have a source.
        """
        reports: dict[str, LoadReport] = {}
        if self.cfg.visual.pretrained:
            rep = self.visual.load_pretrained(self.cfg.visual.pretrained)
            reports["visual"] = rep.prefixed("visual.model.")
        if self.cfg.text.pretrained:
            reports["text"] = self.load_bert(self.cfg.text.pretrained)
        return reports

    def load_bert(self, source: str) -> LoadReport:
        """Initialise the language side from a BERT-family checkpoint
        (:func:`vlparse.models.bert_init.load_bert`)."""
        return load_bert(self, source)

    def pretrained_config(self, processor: Any = None) -> dict[str, Any]:
        """``model`` (the config, without initialisation sources: the weights are saved; a local
        tokenizer path becomes :data:`SAVED_TOKENIZER`), ``vocab_size``, ``special_ids`` and
        ``objectives`` (:data:`PASS_FIELDS`)."""
        ids = {"cls": self.cls_token_id, "sep": self.sep_token_id}
        if processor is not None:
            theirs = processor.special_ids
            if (theirs["cls"], theirs["sep"], theirs["vocab_size"]) != (
                    self.cls_token_id, self.sep_token_id, self.vocab_size):
                raise ValueError(
                    f"save_pretrained: the processor's tokenizer ({theirs}) is not the model's "
                    f"(cls {self.cls_token_id}, sep {self.sep_token_id}, vocabulary "
                    f"{self.vocab_size})"
                )
            ids = {k: v for k, v in theirs.items() if k != "vocab_size"}
        model = to_dict(self.cfg)
        model["visual"]["pretrained"] = model["text"]["pretrained"] = None
        if processor is not None or Path(model["text"]["tokenizer"]).exists():
            model["text"]["tokenizer"] = SAVED_TOKENIZER
        passes = {k: getattr(self.objectives, k) for k in PASS_FIELDS}
        return {"model": model, "vocab_size": self.vocab_size, "special_ids": ids,
                "objectives": passes}

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any], directory: Path
                               ) -> VisualParsingModel:
        """A model of the architecture ``config.json`` describes (no weights read)."""
        model = dict(config["model"])
        if model.get("text", {}).get("tokenizer") == SAVED_TOKENIZER:
            model["text"] = {**model["text"], "tokenizer": str(Path(directory).resolve())}
        ids = config["special_ids"]
        objectives = ObjectiveConfig(**config.get("objectives", {}))
        return cls(from_dict(ModelConfig, model), int(config["vocab_size"]), int(ids["cls"]),
                   int(ids["sep"]), objectives=objectives)


def _gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """``x (T, m, D)`` at ``index (T, k)`` -> ``(T * k, D)``, row-major."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1])).flatten(0, 1)
