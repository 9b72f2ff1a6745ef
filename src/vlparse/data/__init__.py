"""Data: official-format readers, the pre-training data set, its collator, sampler and the
fine-tuning data sets.

See ``docs/architecture.md`` (section Data) for how the parts fit together.
"""

from vlparse.data.collate import NegativeFilter, PretrainCollator, stack_items
from vlparse.data.formats import DataFormatError, ImageCaptions, read_karpathy, read_vg
from vlparse.data.pretrain import PretrainDataset, read_pretrain_records
from vlparse.data.sampler import ResumableSampler, stable_seed

__all__ = [
    "DataFormatError",
    "ImageCaptions",
    "NegativeFilter",
    "PretrainCollator",
    "PretrainDataset",
    "ResumableSampler",
    "read_karpathy",
    "read_pretrain_records",
    "read_vg",
    "stable_seed",
    "stack_items",
]
