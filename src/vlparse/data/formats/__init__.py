"""Readers of the official annotation formats (see ``DATA_FORMATS.md``), one module a format."""

from vlparse.data.formats.jsonio import DataFormatError, load_json, load_jsonl, require
from vlparse.data.formats.karpathy import read_karpathy
from vlparse.data.formats.records import ImageCaptions
from vlparse.data.formats.vg import read_vg

__all__ = [
    "DataFormatError",
    "ImageCaptions",
    "load_json",
    "load_jsonl",
    "read_karpathy",
    "read_vg",
    "require",
]
