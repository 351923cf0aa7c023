"""Image decoding and the pixel limit (issue 19, findings 7 and 9), in the main environment.

Evidence: files crafted with Pillow (and a hand-written PNG header, tests/helpers/images.py)
whose expected pixels follow from OpenCV's documented behaviour; the pixel-for-pixel
comparison with OpenCV itself is tests/parity/test_images.py.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from segnext_hub.errors import BadInputError
from segnext_hub.images import MAX_PIXELS, read_rgb
from segnext_hub.tasks.evaluate import load_image
from segnext_hub.training.data import read_image
from tests.helpers.images import png16, png_header_only, with_orientation

READERS = [read_rgb, load_image, read_image]  # predict/eval and training share one decode


@pytest.mark.parametrize("reader", READERS)
def test_a_huge_header_is_refused_before_decoding(tmp_path, reader):
    """78 KB can claim 9000 x 9000: refused from the header, in well under a decode's time."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(9000, 9000))
    started = time.monotonic()
    with pytest.raises(BadInputError, match=r"9000 x 9000 = 81.0 MP, over the 50 MP limit"):
        reader(bomb)
    assert time.monotonic() - started < 1.0


def test_the_limit_is_an_argument(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(np.zeros((100, 120, 3), np.uint8)).save(path)
    with pytest.raises(BadInputError, match="over the 0.01 MP limit"):
        read_rgb(path, max_pixels=10_000)
    assert read_rgb(path, max_pixels=12_000).shape == (100, 120, 3)
    assert MAX_PIXELS == 50_000_000
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(9000, 9000))
    with pytest.raises(BadInputError, match="cannot read image") as err:  # allowed: now it is the decode that fails
        read_rgb(bomb, max_pixels=None)
    assert "MP" not in str(err.value)


@pytest.mark.parametrize("reader", READERS)
def test_16_bit_grey_keeps_its_high_byte_instead_of_clipping_to_white(tmp_path, reader):
    values = np.array([[0, 255, 256, 0x1234], [0x7FFF, 0x8000, 0xFF00, 0xFFFF]], dtype=np.uint16)
    path = tmp_path / "depth.png"
    path.write_bytes(png16(values))
    rgb = reader(path)
    expected = (values >> 8).astype(np.uint8)
    assert rgb.shape == (2, 4, 3) and np.array_equal(rgb, np.repeat(expected[..., None], 3, axis=2))


@pytest.mark.parametrize("fmt, suffix", [("JPEG", "jpg"), ("PNG", "png")])
@pytest.mark.parametrize("reader", READERS)
def test_exif_orientation_is_applied(tmp_path, reader, fmt, suffix):
    rgb = np.zeros((6, 9, 3), np.uint8)
    rgb[0, 0] = 255  # one white corner, top left as stored
    path = tmp_path / f"rotated.{suffix}"
    path.write_bytes(with_orientation(rgb, 6, fmt))  # 6: the camera was turned 90 degrees clockwise
    out = reader(path)
    assert out.shape == (9, 6, 3)
    corner = np.unravel_index(np.argmax(out[..., 0]), out.shape[:2])
    assert corner == (0, 5)  # the stored top-left is shown top right


@pytest.mark.parametrize("reader", READERS)
def test_cmyk_jpeg_uses_opencvs_conversion(tmp_path, reader):
    """Pure CMYK white and black, and K=0 inks; values OpenCV's formula gives exactly."""
    cmyk = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [255, 0, 0, 0], [0, 0, 0, 128]]], np.uint8)
    path = tmp_path / "print.jpg"
    Image.fromarray(np.repeat(np.repeat(cmyk, 8, axis=0), 8, axis=1), "CMYK").save(path, quality=100)
    out = reader(path)[4, ::8]
    assert np.array_equal(out[0], [255, 255, 255]) and np.array_equal(out[1], [0, 0, 0])
    assert out[2, 0] <= 1 and out[2, 1] >= 254  # cyan: no red
    assert abs(int(out[3, 0]) - 127) <= 1  # half black: grey


def test_float_images_are_refused_in_one_line(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.ones((4, 4), np.float32)).save(path)
    with pytest.raises(BadInputError, match="floating-point samples"):
        read_rgb(path)
