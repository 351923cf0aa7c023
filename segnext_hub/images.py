"""Reading images as MMSeg reads them (OpenCV's colour decode), bounded in pixels.

MMSeg's ``LoadImageFromFile`` decodes with ``mmcv.imfrombytes(flag='color', backend='cv2')``,
that is ``cv2.imdecode(..., IMREAD_COLOR)``. Its class maps are what this package promises,
so :func:`read_rgb` reproduces that decode with Pillow, pixel for pixel
(tests/parity/test_images.py compares it with ``cv2.imdecode`` on crafted files):

* EXIF orientation is applied (OpenCV's colour read does; ``IMREAD_IGNORE_ORIENTATION`` is
  not set), for JPEG and PNG alike;
* 16-bit samples keep their high byte, as OpenCV's PNG and greyscale TIFF readers do
  (a naive ``convert("RGB")`` clips a 16-bit grey image to white);
* CMYK JPEGs use OpenCV's own conversion of the (Adobe-inverted) samples, which differs
  from Pillow's by one level here and there;
* greyscale, palette, 1-bit, grey+alpha and RGBA files become RGB with alpha dropped (no
  compositing), as OpenCV does.

Known difference: a 16-bit *colour* TIFF is reduced by Pillow (high byte) where OpenCV
scales it by 255/65535 with rounding, so a channel can be one level lower. 32-bit and
float images are refused.

The pixel limit (:data:`MAX_PIXELS`, 50 MP by default) is checked from the header, before
a byte of pixel data is decoded: a 78 KB PNG can claim 9000 x 9000 pixels, and inference
upsamples one logit plane per class to the image size (150 classes x 4 bytes a pixel).
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from typing import Any, Iterator, Optional, Union

import numpy as np

from .errors import BadInputError

MAX_PIXELS = 50_000_000  # 50 MP: larger than any camera photo most users segment
_PILLOW_LIMIT_LOCK = threading.Lock()
_GREY16 = {"I;16", "I;16B", "I;16L", "I;16N", "I"}

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def _pillow_allows(max_pixels: int) -> Iterator[None]:
    """Let our limit, checked first, govern: Pillow's own bomb check (89 MP warning, 179 MP
    error) would otherwise refuse what the user explicitly allowed, or warn below it."""
    from PIL import Image

    with _PILLOW_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max(max_pixels, old or 0) if old is not None else None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


def check_size(path: PathLike, width: int, height: int, max_pixels: Optional[int]) -> None:
    """Refuse an image over ``max_pixels`` (None: no limit) with one line naming it."""
    if max_pixels is not None and width * height > max_pixels:
        raise BadInputError(f"image {path} is {width} x {height} = {width * height / 1e6:.1f} MP, over the "
                            f"{max_pixels / 1e6:g} MP limit (raise it with --max-megapixels or max_pixels=)")


def check_header(path: PathLike, *, max_pixels: Optional[int] = MAX_PIXELS) -> tuple[int, int]:
    """Open ``path``'s header only: (width, height), without decoding a pixel.

    Raises:
        BadInputError: not an image Pillow can open, or over ``max_pixels``.
    """
    from PIL import Image

    try:
        with _pillow_allows(max_pixels or 2**62), Image.open(path) as img:
            check_size(path, img.width, img.height, max_pixels)
            return img.width, img.height
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        if isinstance(err, BadInputError):
            raise
        raise BadInputError(f"cannot read image {path}: {err}") from None


def read_rgb(path: PathLike, *, max_pixels: Optional[int] = MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` as ``cv2.imdecode(..., IMREAD_COLOR)`` does, as RGB.

    Args:
        path: an image file in any format Pillow reads (JPEG, PNG, BMP, WebP, TIFF, ...).
        max_pixels: width x height above which the file is refused before decoding
            (None: no limit). Inference memory grows with it (one plane per class).

    Returns:
        (H, W, 3) uint8 RGB, upright by its EXIF orientation.

    Raises:
        BadInputError: unreadable or truncated file, over the pixel limit, or a pixel type
            OpenCV's colour read would not give 8-bit colour for (32-bit, float).
    """
    from PIL import Image, ImageOps

    try:
        with _pillow_allows(max_pixels or 2**62), Image.open(path) as img:
            check_size(path, img.width, img.height, max_pixels)
            return _to_rgb(ImageOps.exif_transpose(img), img.format, path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        if isinstance(err, BadInputError):
            raise
        raise BadInputError(f"cannot read image {path}: {err}") from None


def _to_rgb(img: Any, fmt: Optional[str], path: PathLike) -> np.ndarray:
    """The 8-bit RGB pixels OpenCV's colour read gives for this (already upright) image."""
    mode = img.mode
    if mode in _GREY16:
        values = np.asarray(img).astype(np.int64)
        if values.size and (int(values.max()) > 0xFFFF or int(values.min()) < 0):
            raise BadInputError(f"cannot read image {path}: 32-bit samples are not an 8-bit colour image")
        grey = (values >> 8).astype(np.uint8)  # the high byte, as OpenCV's PNG and TIFF readers keep
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        raise BadInputError(f"cannot read image {path}: floating-point samples are not an 8-bit colour image")
    if mode == "CMYK" and fmt == "JPEG":
        raw = 255 - np.asarray(img).astype(np.int32)  # the stored (Adobe-inverted) samples
        k = raw[..., 3:4]
        return (k - (((255 - raw[..., :3]) * k) >> 8)).astype(np.uint8)
    return np.array(img.convert("RGB"))  # writable, as OpenCV's arrays are
