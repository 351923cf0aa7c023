"""Crafted image files for the decode tests: every kind whose colour read differs between a
naive Pillow ``convert("RGB")`` and OpenCV's ``imdecode(IMREAD_COLOR)`` (MMSeg's reader).

Pillow writes most of them. It cannot write 16-bit colour PNGs, so :func:`png16` writes a
PNG by hand (signature, IHDR, one zlib IDAT, IEND; filter 0 on every row), and
:func:`png_header_only` writes a header that claims any size with no pixel data at all.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG of a (H, W) grey, (H, W, 2) grey+alpha, (H, W, 3) RGB or (H, W, 4) RGBA uint16 array."""
    array = np.asarray(array, dtype=">u2")
    channels = 1 if array.ndim == 2 else array.shape[2]
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    height, width = array.shape[:2]
    rows = array.reshape(height, width * channels)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` grey pixels and holds one empty IDAT: a
    decoder that trusts the header allocates, one that checks it first refuses."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def with_orientation(rgb: np.ndarray, orientation: int, fmt: str) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    extra = {"quality": 100} if fmt == "JPEG" else {}
    return encode(Image.fromarray(rgb), fmt, exif=exif, **extra)


def crafted_images(seed: int = 0) -> dict[str, bytes]:
    """name (with its extension) -> file bytes, one per decode rule in segnext_hub/images.py."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    files = {
        "grey16.png": png16(rng.integers(0, 65536, (5, 7), dtype=np.uint16)),
        "grey16_alpha.png": png16(rng.integers(0, 65536, (5, 7, 2), dtype=np.uint16)),
        "rgb16.png": png16(rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16)),
        "rgba16.png": png16(rng.integers(0, 65536, (5, 7, 4), dtype=np.uint16)),
        "grey16.tif": encode(Image.fromarray(rng.integers(0, 65536, (5, 7), dtype=np.uint16)), "TIFF"),
        "cmyk.jpg": encode(Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), "CMYK"), "JPEG",
                           quality=90),
        "palette.png": encode(Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG"),
        "palette_trns.png": encode(Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
                                   "PNG", transparency=3),
        "grey_alpha.png": encode(Image.fromarray(grey).convert("LA"), "PNG"),
        "rgba.png": encode(Image.fromarray(np.dstack([rgb, grey[::-1]])), "PNG"),
        "bilevel.png": encode(Image.fromarray(grey > 128), "PNG"),
        "grey.jpg": encode(Image.fromarray(grey), "JPEG"),
        "rgb.bmp": encode(Image.fromarray(rgb), "BMP"),
        "rgb.webp": encode(Image.fromarray(rgb), "WEBP", lossless=True),
    }
    for orientation in range(1, 9):
        files[f"exif{orientation}.jpg"] = with_orientation(rgb, orientation, "JPEG")
        files[f"exif{orientation}.png"] = with_orientation(rgb, orientation, "PNG")
    return files


def write_crafted(folder: Path, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in crafted_images(seed).items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths
