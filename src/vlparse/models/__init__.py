"""vlparse models: the visual parser, embeddings, the multi-modal Transformer and heads."""

from vlparse.models.embeddings import TextEmbedding, VisualEmbedding, sine_position_embedding_2d
from vlparse.models.heads import ITMHead, MFRHead, MLMHead
from vlparse.models.outputs import FusionOutput, VisualOutput
from vlparse.models.single_stream import VisualParsingModel
from vlparse.models.transformer import MultiModalEncoder
from vlparse.models.visual import SwinParser, build_visual_embedder
from vlparse.models.weights import (
    LoadReport,
    bert_to_vlparse,
    load_state_dict_report,
    read_state_dict,
)

__all__ = [
    "VisualParsingModel",
    "SwinParser",
    "build_visual_embedder",
    "VisualEmbedding",
    "TextEmbedding",
    "sine_position_embedding_2d",
    "MultiModalEncoder",
    "MLMHead",
    "ITMHead",
    "MFRHead",
    "VisualOutput",
    "FusionOutput",
    "LoadReport",
    "load_state_dict_report",
    "read_state_dict",
    "bert_to_vlparse",
]
