"""Records shared by the caption readers."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ImageCaptions"]


@dataclass
class ImageCaptions:
    """One image and its captions, as read from a caption format.

    Attributes:
        image_path: absolute (or root-relative, if the root was relative) path of the image file.
        captions: the image's captions in file order (may be empty for images without any).
        image_id: the data set's id of the image (COCO id, Flickr30K number, VG image id...).
        source: the data set the record comes from, e.g. ``"coco"``, ``"flickr30k"``, ``"vg"``.
    """

    image_path: str
    captions: list[str]
    image_id: str | int
    source: str
