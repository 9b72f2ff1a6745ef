"""The built-in synthetic scene world: procedurally drawn scenes of flat shapes whose captions,
questions and statements depend on the objects' attributes and spatial/size relations.

``generate(out_dir, num_images, seed)`` writes every official format the library reads (Karpathy,
Visual Genome, VQA v2, NLVR2, SNLI-VE, MDETR grounding, COCO instances) and a ``manifest.json``.
The grammar and answer set are described in ``docs/scene_world.md``.
"""

from .generate import MIN_IMAGES, generate, split_of
from .language import NUMBER_WORDS, REL_PHRASES
from .questions import ANSWERS, QUESTION_FAMILIES
from .scenes import BACKGROUNDS, COLORS, RELATIONS, SHAPES, SIZES, Scene, SceneObject

__all__ = [
    "generate",
    "split_of",
    "MIN_IMAGES",
    "ANSWERS",
    "QUESTION_FAMILIES",
    "BACKGROUNDS",
    "COLORS",
    "NUMBER_WORDS",
    "REL_PHRASES",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "Scene",
    "SceneObject",
]
