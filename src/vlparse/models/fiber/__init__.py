"""FIBER: fusion in the backbone (a timm Swin and a transformers BERT/RoBERTa, gated
cross-attention in their top layers), a second model family beside the Visual Parsing model."""

from vlparse.models.fiber.cross_attention import GatedCrossAttention
from vlparse.models.fiber.modeling import FiberModel
from vlparse.models.fiber.outputs import FiberImageOutput, FiberOutput, FiberTextOutput
from vlparse.models.fiber.pairing import FusionPair, fusion_pairs
from vlparse.models.fiber.processor import FiberProcessor

__all__ = [
    "FiberModel",
    "FiberProcessor",
    "FiberOutput",
    "FiberImageOutput",
    "FiberTextOutput",
    "GatedCrossAttention",
    "FusionPair",
    "fusion_pairs",
]
