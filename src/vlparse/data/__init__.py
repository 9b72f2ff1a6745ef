"""Data: official-format readers, the pre-training dataset, sampler and collation.

See ``docs/architecture.md`` (section Data) for how the parts fit together.
"""

from vlparse.data.collate import collate_pretrain
from vlparse.data.formats import DataFormatError, ImageCaptions, read_karpathy, read_vg
from vlparse.data.pretrain import PretrainDataset, read_pretrain_records
from vlparse.data.sampler import ResumableSampler, stable_seed

__all__ = [
    "DataFormatError",
    "ImageCaptions",
    "PretrainDataset",
    "ResumableSampler",
    "collate_pretrain",
    "read_karpathy",
    "read_pretrain_records",
    "read_vg",
    "stable_seed",
]
