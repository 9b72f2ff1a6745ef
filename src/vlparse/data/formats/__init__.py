"""Readers of the official annotation formats (see ``DATA_FORMATS.md``), one module a format."""

from vlparse.data.formats.jsonio import DataFormatError, load_json, load_jsonl, require
from vlparse.data.formats.karpathy import read_karpathy
from vlparse.data.formats.nlvr2 import NLVR2Example, nlvr2_image_paths, read_nlvr2
from vlparse.data.formats.records import ImageCaptions
from vlparse.data.formats.snli_ve import SNLI_VE_LABELS, SNLIVEExample, read_snli_ve
from vlparse.data.formats.vg import read_vg
from vlparse.data.formats.vqa import VQAQuestion, coco_image_name, read_vqa

__all__ = [
    "DataFormatError",
    "ImageCaptions",
    "load_json",
    "load_jsonl",
    "read_karpathy",
    "read_vg",
    "require",
    "NLVR2Example",
    "SNLIVEExample",
    "SNLI_VE_LABELS",
    "VQAQuestion",
    "coco_image_name",
    "nlvr2_image_paths",
    "read_nlvr2",
    "read_snli_ve",
    "read_vqa",
]
