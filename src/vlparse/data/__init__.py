"""Data: official-format readers, tokenisation, the pre-training dataset, sampler and collation.

See ``docs/architecture.md`` (section Data) for how the parts fit together.
"""

from vlparse.data.collate import collate_pretrain
from vlparse.data.formats import DataFormatError, ImageCaptions, read_karpathy, read_vg
from vlparse.data.images import BadImageError, load_image
from vlparse.data.pretrain import PretrainDataset, read_pretrain_records
from vlparse.data.sampler import ResumableSampler, stable_seed
from vlparse.data.tokenization import build_tokenizer, encode_texts, special_ids
from vlparse.data.transforms import denormalize, image_transform

__all__ = [
    "BadImageError",
    "DataFormatError",
    "ImageCaptions",
    "PretrainDataset",
    "ResumableSampler",
    "build_tokenizer",
    "collate_pretrain",
    "denormalize",
    "encode_texts",
    "image_transform",
    "load_image",
    "read_karpathy",
    "read_pretrain_records",
    "read_vg",
    "special_ids",
    "stable_seed",
]
