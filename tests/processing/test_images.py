"""Image loading: high-bit-depth images scaled to 8 bits, in files and in PIL images passed in."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vlparse.models.processor import VisualParsingProcessor
from vlparse.processing.images import load_image, to_rgb
from vlparse.processing.tokenization import build_tokenizer
from vlparse.processing.transforms import denormalize, image_transform


def _png16(path, values: np.ndarray, color_type: int) -> None:
    """A 16-bit PNG written by hand (PIL cannot write 16-bit colour): ``values`` ``(H, W)``
    grey (type 0) or ``(H, W, C)`` RGB (2) / RGBA (6), big-endian samples."""
    h, w = values.shape[:2]
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path):
    """Guards against 16-bit grey PNGs (PIL mode I;16) turning white: PIL's convert("RGB")
    clips every value above 255, so a mid-grey 16-bit image became all 255."""
    ramp = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    path = tmp_path / "grey16.png"
    _png16(path, ramp, 0)
    assert Image.open(path).mode in ("I;16", "I")
    rgb = np.asarray(load_image(path))
    assert rgb.dtype == np.uint8 and rgb.shape == (16, 16, 3)
    expected = np.rint(ramp * 255.0 / 65535.0).astype(np.uint8)
    for c in range(3):
        assert np.array_equal(rgb[..., c], expected)
    assert 100 < rgb.mean() < 155  # a ramp averages mid-grey, not white


@pytest.mark.parametrize("mode, values, expected", [
    ("I;16", np.full((4, 4), 40000, np.uint16), round(40000 * 255 / 65535)),
    ("I", np.full((4, 4), 65535, np.int32), 255),
    ("I", np.full((4, 4), -5, np.int32), 0),
    ("F", np.full((4, 4), 0.5, np.float32), 128),
    ("F", np.full((4, 4), 300.0, np.float32), 255),
])
def test_pil_images_of_every_high_bit_mode(mode, values, expected):
    img = Image.fromarray(values)
    assert img.mode == mode
    rgb = to_rgb(img)
    assert rgb.mode == "RGB" and (np.asarray(rgb) == expected).all()


def test_sixteen_bit_colour_pngs_keep_their_colour(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 32896, 2570
    _png16(tmp_path / "rgb16.png", rgb, 2)
    rgba = np.zeros((4, 4, 4), np.uint16)
    rgba[..., 1], rgba[..., 3] = 65535, 65535
    _png16(tmp_path / "rgba16.png", rgba, 6)
    assert tuple(np.asarray(load_image(tmp_path / "rgb16.png"))[0, 0]) == (255, 128, 10)
    assert tuple(np.asarray(load_image(tmp_path / "rgba16.png"))[0, 0]) == (0, 255, 0)


def test_the_transform_and_the_processor_take_sixteen_bit_pil_images():
    grey = Image.fromarray(np.full((8, 8), 32768, np.uint16))
    shown = denormalize(image_transform(8)(grey))
    assert abs(float(shown.mean()) - 128 / 255) < 0.01
    processor = VisualParsingProcessor(build_tokenizer("bert-base-uncased"), 8, 4)
    from_processor = denormalize(processor(images=grey)["image"][0])
    assert abs(float(from_processor.mean()) - 128 / 255) < 0.01
