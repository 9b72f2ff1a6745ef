"""Image loading that turns every way an image file can be bad into one :class:`BadImageError`,
and the one conversion to 8-bit RGB that every image goes through (:func:`to_rgb`)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from vlparse.errors import BadImageError

__all__ = ["load_image", "to_rgb"]

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``img`` with high-bit-depth modes scaled, not clipped.

    PIL's own ``convert("RGB")`` clips the integer modes to ``[0, 255]``, which turns a 16-bit
    image white. Here:

    - ``I;16`` (and its byte orders) and ``I`` (how PNG and TIFF 16-bit grey images open) are
      read as 16-bit values: ``round(v * 255 / 65535)``, values outside ``[0, 65535]`` clipped;
    - ``F`` (32-bit float): values in ``[0, 1]`` are scaled by 255; an image with values above 1
      is taken to be on the 8-bit scale and clipped to ``[0, 255]``;
    - every other mode (16-bit RGB, RGBA and grey-alpha PNGs open as ``RGB``, ``RGBA`` and
      ``RGBA`` with their high bytes, which is the right scaling) goes through ``convert``.
    """
    if img.mode == "RGB":
        return img.copy()
    if img.mode in _SIXTEEN_BIT:
        values = np.asarray(img, dtype=np.float64)
        grey = np.rint(np.clip(values, 0.0, 65535.0) * (255.0 / 65535.0))
    elif img.mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        grey = np.rint(np.clip(values * scale, 0.0, 255.0))
    else:
        return img.convert("RGB")
    return Image.fromarray(grey.astype(np.uint8), mode="L").convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file fully decoded, as 8-bit RGB (:func:`to_rgb`).

    Decoding is forced (``Image.load``) so that truncated or corrupt files fail here, not later
    in a transform.

    Raises:
        BadImageError: the file is missing, not an image, corrupt or truncated.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        reason = "is a directory" if os.path.isdir(path) else "file not found"
        raise BadImageError(path, reason)
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except Image.UnidentifiedImageError as e:
        raise BadImageError(path, f"not a recognised image format ({e})") from e
    except Image.DecompressionBombError as e:
        raise BadImageError(path, f"image too large ({e})") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise BadImageError(path, f"corrupt or truncated image ({type(e).__name__}: {e})") from e
