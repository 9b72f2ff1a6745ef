"""vlparse models: the visual parser, embeddings, the multi-modal Transformer, heads, the task
models, the processor, and saving / loading (``save_pretrained`` / ``from_pretrained``)."""

from vlparse.models.base import PretrainedMixin, role_param_groups
from vlparse.models.embeddings import TextEmbedding, VisualEmbedding, sine_position_embedding_2d
from vlparse.models.heads import MatchHead, MFRHead, MLMHead, MLPHead
from vlparse.models.loading import load_pretrained_model, load_run
from vlparse.models.outputs import FusionOutput, PretrainOutput, TaskOutput, VisualOutput
from vlparse.models.processor import VisualParsingProcessor
from vlparse.models.registry import create_model, list_models, list_recipes
from vlparse.models.single_stream import VisualParsingModel
from vlparse.models.task_registry import processor_for, task_model_class
from vlparse.models.transformer import MultiModalEncoder
from vlparse.models.visual import SwinParser, build_visual_embedder
from vlparse.models.vp_tasks import (
    VisualParsingForNLVR2,
    VisualParsingForQuestionAnswering,
    VisualParsingForRetrieval,
    VisualParsingForVisualEntailment,
)
from vlparse.models.weights import LoadReport, load_state_dict_report, read_state_dict

__all__ = [
    "VisualParsingModel",
    "VisualParsingProcessor",
    "VisualParsingForRetrieval",
    "VisualParsingForQuestionAnswering",
    "VisualParsingForNLVR2",
    "VisualParsingForVisualEntailment",
    "PretrainedMixin",
    "role_param_groups",
    "create_model",
    "list_models",
    "list_recipes",
    "load_pretrained_model",
    "load_run",
    "processor_for",
    "task_model_class",
    "SwinParser",
    "build_visual_embedder",
    "VisualEmbedding",
    "TextEmbedding",
    "sine_position_embedding_2d",
    "MultiModalEncoder",
    "MLMHead",
    "MatchHead",
    "MFRHead",
    "MLPHead",
    "VisualOutput",
    "FusionOutput",
    "PretrainOutput",
    "TaskOutput",
    "LoadReport",
    "load_state_dict_report",
    "read_state_dict",
]
