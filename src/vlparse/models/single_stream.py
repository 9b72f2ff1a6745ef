"""The Visual Parsing model: a visual parser feeding a single-stream BERT-style Transformer.

The fused sequence is ``[CLS] v_1 .. v_m [SEP] W`` where ``W`` is the tokenizer's text part
(words, its own trailing ``[SEP]``, padding). Text positions: ``[CLS]`` = 0, ``[SEP]`` = 1,
``W`` = 2, 3, ...; visual tokens carry a fixed 2-D sine position instead. Token types: 0 for
``[CLS]``, ``[SEP]`` and ``W``, 1 for the visual tokens (one shared table).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from vlparse.config import ModelConfig
from vlparse.errors import PretrainedUnavailableError
from vlparse.models.embeddings import VISION_TYPE, TextEmbedding, VisualEmbedding
from vlparse.models.heads import ITCHead, ITMHead, MFRHead, MLMHead
from vlparse.models.outputs import FusionOutput, VisualOutput
from vlparse.models.transformer import MultiModalEncoder
from vlparse.models.visual import build_visual_embedder
from vlparse.models.weights import (
    LoadReport,
    load_state_dict_report,
    map_bert_state_dict,
    read_state_dict,
)

__all__ = ["VisualParsingModel"]

_NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed", "position", "token_type")


class VisualParsingModel(nn.Module):
    """Visual parser + multi-modal Transformer + pre-training heads.

    Args:
        cfg: the model config.
        vocab_size: ``V`` of the tokenizer.
        cls_token_id: id of ``[CLS]`` (bert-base-uncased: 101).
        sep_token_id: id of ``[SEP]`` (bert-base-uncased: 102).

    No weights are read here; call :meth:`load_pretrained`.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        vocab_size: int,
        cls_token_id: int = 101,
        sep_token_id: int = 102,
    ) -> None:
        super().__init__()
        t = cfg.text
        for name, tid in (("cls_token_id", cls_token_id), ("sep_token_id", sep_token_id)):
            if not 0 <= tid < vocab_size:
                raise ValueError(f"{name}={tid} is outside the vocabulary (size {vocab_size})")
        self.cfg = cfg
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
        self.itm_head = ITMHead(t.hidden_size, init_std=std)
        self.mfr_head = MFRHead(t.hidden_size, self.visual.out_dim, init_std=std)
        self.itc_head = (
            ITCHead(self.visual.out_dim, t.hidden_size, cfg.itc_dim) if cfg.itc_dim > 0 else None
        )
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

    # ------------------------------------------------------------------ forward

    def encode_image(self, images: Tensor, output_attentions: bool = False) -> VisualOutput:
        """``(B, 3, H, W)`` -> :class:`VisualOutput` (tokens ``(B, m, c)``, attention
        ``(B, m, m)`` when asked)."""
        return self.visual(images, output_attentions=output_attentions)

    def fuse(
        self,
        visual_tokens: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        visual_mask: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> FusionOutput:
        """Run the multi-modal Transformer over ``[CLS] V [SEP] W``.

        Args:
            visual_tokens: ``(B, m, c)`` from :meth:`encode_image`.
            input_ids: ``(B, L)`` the text part ``W`` (no ``[CLS]``), ``L <= max_text_len``.
            attention_mask: ``(B, L)`` 1 for real text tokens, 0 for padding.
            visual_mask: ``(B, m)`` bool; ``True`` tokens are replaced by the learned
                ``visual_mask_token`` (in ``D`` space, before position and type embeddings).
            output_attentions: return ``(B, H, N, N)`` per layer.
            output_hidden_states: return ``(B, N, D)`` per layer plus the embeddings.

        Returns:
            :class:`FusionOutput` with ``N = 2 + m + L``.
        """
        b, m = visual_tokens.shape[:2]
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
        length = input_ids.shape[1]
        if length > self.max_text_len:
            raise ValueError(
                f"fuse: text length {length} exceeds text.max_text_len={self.max_text_len}"
            )
        device = input_ids.device
        special = torch.tensor([self.cls_token_id, self.sep_token_id], device=device)
        ids = torch.cat([special.expand(b, 2), input_ids], dim=1)  # (B, 2 + L)
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

    # ------------------------------------------------------------------ optimisation

    def param_groups(self, lr: float, visual_lr: float, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: the visual parser at ``visual_lr``, the rest at ``lr``; no
        weight decay for biases, norms, position / type / relative-position tables and the mask
        token. Every trainable parameter appears in exactly one group; empty groups are left out.
        Each group has ``name``, ``params``, ``lr``, ``weight_decay``."""
        groups: dict[str, dict] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            visual = name.startswith("visual.")
            no_decay = p.ndim <= 1 or any(s in name for s in _NO_DECAY_NAMES)
            key = ("visual" if visual else "fusion") + ("_no_decay" if no_decay else "_decay")
            group = groups.setdefault(
                key,
                {
                    "name": key,
                    "params": [],
                    "lr": visual_lr if visual else lr,
                    "weight_decay": 0.0 if no_decay else weight_decay,
                },
            )
            group["params"].append(p)
        order = ["visual_decay", "visual_no_decay", "fusion_decay", "fusion_no_decay"]
        return [groups[k] for k in order if k in groups]

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
        """Initialise the language side from a BERT-family checkpoint.

        Args:
            source: a local folder (``model.safetensors`` / ``pytorch_model.bin``), a checkpoint
                file, or a Hugging Face model name (via ``transformers``; offline it must be in
                the local cache).

        Returns:
            The report; ``missing`` lists the text-side keys (embeddings, encoder, MLM head)
            the checkpoint did not set; the visual side, the ITM/MFR heads and the mask token
            are counted in ``notes``.
        """
        sd, heads = self._read_bert(source)
        t = self.cfg.text
        word = sd.get("embeddings.word_embeddings.weight")
        if word is None:
            word = sd.get("bert.embeddings.word_embeddings.weight")
        if word is None:
            raise ValueError(f"text.pretrained '{source}': no BERT word embeddings found")
        where = f"text.pretrained '{source}'"
        if word.shape[1] != t.hidden_size:
            raise ValueError(
                f"{where}: hidden size {word.shape[1]} but text.hidden_size={t.hidden_size}; "
                "set text.hidden_size (and num_heads, intermediate_size) to the checkpoint's"
            )
        if word.shape[0] != self.vocab_size:
            raise ValueError(
                f"{where}: vocabulary of {word.shape[0]} tokens but the model has "
                f"{self.vocab_size}; use the checkpoint's tokenizer"
            )
        if heads is not None and heads != t.num_heads:
            raise ValueError(f"{where}: {heads} attention heads but text.num_heads={t.num_heads}")
        mapped, unused, notes = map_bert_state_dict(sd, t.num_layers)
        layers = {int(k.split(".")[2]) for k in mapped if k.startswith("encoder.layers.")}
        if len(layers) < t.num_layers:
            raise ValueError(
                f"{where}: checkpoint has {len(layers)} layers but text.num_layers="
                f"{t.num_layers}; lower text.num_layers or use a deeper checkpoint"
            )
        pos_key = "text_embed.position_embeddings.weight"
        rows = self.text_embed.max_positions
        if pos_key in mapped and mapped[pos_key].shape[0] != rows:
            if mapped[pos_key].shape[0] < rows:
                raise ValueError(
                    f"{where}: {mapped[pos_key].shape[0]} positions, the model needs {rows} "
                    f"(text.max_text_len + 2)"
                )
            notes.append(f"position table sliced from {mapped[pos_key].shape[0]} to {rows} rows")
            mapped[pos_key] = mapped[pos_key][:rows]
        report = load_state_dict_report(self, mapped)
        if "text_embed.word_embeddings.weight" in mapped:
            report.missing = [k for k in report.missing if k != "mlm_head.decoder.weight"]
        report.unexpected = unused + report.unexpected
        not_text = ("visual.", "visual_embed.", "itm_head.", "mfr_head.", "visual_mask_token")
        other = [k for k in report.missing if k.startswith(not_text)]
        report.missing = [k for k in report.missing if not k.startswith(not_text)]
        report.notes = notes + [
            f"read {source}",
            f"{len(other)} keys of the visual side, ITM/MFR heads and mask token are not part "
            "of a BERT checkpoint and keep their initialisation",
        ]
        return report

    @staticmethod
    def _read_bert(source: str) -> tuple[dict[str, Tensor], int | None]:
        """State dict and head count (from ``config.json`` when there is one) of a checkpoint."""
        path = Path(source)
        if path.exists():
            sd = read_state_dict(path)
            config = path / "config.json" if path.is_dir() else path.parent / "config.json"
            heads = None
            if config.is_file():
                heads = json.loads(config.read_text()).get("num_attention_heads")
            return sd, heads
        try:
            from transformers import AutoModel

            hf = AutoModel.from_pretrained(source)
        except Exception as e:  # hub and cache errors come in many types
            raise PretrainedUnavailableError(
                f"text.pretrained '{source}' is not a local path and transformers could not load "
                f"it ({type(e).__name__}: {e}). Offline, the model must be in the Hugging Face "
                "cache; otherwise point text.pretrained to a local folder or checkpoint file"
            ) from e
        return hf.state_dict(), getattr(hf.config, "num_attention_heads", None)
