"""Initialising the language side of the Visual Parsing model from a BERT-family checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor, nn

from vlparse.errors import PretrainedUnavailableError
from vlparse.models.weights import (
    LoadReport,
    load_state_dict_report,
    map_bert_state_dict,
    read_state_dict,
)

__all__ = ["load_bert", "read_bert"]


def load_bert(model: nn.Module, source: str) -> LoadReport:
    """Initialise the language side of a :class:`~vlparse.models.single_stream.VisualParsingModel`
    from a BERT-family checkpoint.

    Args:
        source: a local folder (``model.safetensors`` / ``pytorch_model.bin``), a checkpoint
            file, or a Hugging Face model name (via ``transformers``; offline it must be in
            the local cache).

    Returns:
        The report; ``missing`` lists the text-side keys (embeddings, encoder, MLM head)
        the checkpoint did not set; the visual side, the ITM/MFR heads and the mask token
        are counted in ``notes``.
    """
    sd, heads = read_bert(source)
    t = model.cfg.text
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
    if word.shape[0] != model.vocab_size:
        raise ValueError(
            f"{where}: vocabulary of {word.shape[0]} tokens but the model has "
            f"{model.vocab_size}; use the checkpoint's tokenizer"
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
    rows = model.text_embed.max_positions
    if pos_key in mapped and mapped[pos_key].shape[0] != rows:
        if mapped[pos_key].shape[0] < rows:
            raise ValueError(
                f"{where}: {mapped[pos_key].shape[0]} positions, the model needs {rows} "
                f"(text.max_text_len + 2)"
            )
        notes.append(f"position table sliced from {mapped[pos_key].shape[0]} to {rows} rows")
        mapped[pos_key] = mapped[pos_key][:rows]
    report = load_state_dict_report(model, mapped)
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

def read_bert(source: str) -> tuple[dict[str, Tensor], int | None]:
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
            f"model.text.pretrained '{source}' is not a local path and transformers could not "
            f"load it ({type(e).__name__}: {e}). Offline, the model must be in the Hugging Face "
            "cache; otherwise point to a local copy (model.text.pretrained=/path/to/bert, a "
            "folder with config.json and model.safetensors, or a checkpoint file), or set "
            "model.text.pretrained=null to start from random weights"
        ) from e
    return hf.state_dict(), getattr(hf.config, "num_attention_heads", None)
