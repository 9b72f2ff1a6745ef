"""Image loading that turns every way an image file can be bad into one :class:`BadImageError`."""

from __future__ import annotations

import os

from PIL import Image

from vlparse.errors import BadImageError

__all__ = ["load_image"]


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file fully decoded, as RGB.

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
            return img.convert("RGB")
    except Image.UnidentifiedImageError as e:
        raise BadImageError(path, f"not a recognised image format ({e})") from e
    except Image.DecompressionBombError as e:
        raise BadImageError(path, f"image too large ({e})") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise BadImageError(path, f"corrupt or truncated image ({type(e).__name__}: {e})") from e
