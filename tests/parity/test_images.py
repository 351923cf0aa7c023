"""Images are decoded as MMSeg decodes them: pixel for pixel against OpenCV (issue 19, finding 9).

Evidence: tests/parity/image_worker.py reads each crafted file with MMSeg's reader
(``mmcv.imfrombytes(flag='color', backend='cv2')``, i.e. ``cv2.imdecode(IMREAD_COLOR)``, of
the opencv-python-headless pinned in tests/parity/requirements.txt) in .venv-parity;
segnext_hub.images.read_rgb reads the same bytes with Pillow. The files
(tests/helpers/images.py) cover every rule where a plain Pillow ``convert("RGB")`` differs:
16-bit PNG/TIFF, EXIF orientations 1-8 in JPEG and PNG, CMYK JPEG, palette, grey+alpha, RGBA.
"""

from __future__ import annotations

import numpy as np
import pytest

from segnext_hub.images import read_rgb
from tests.helpers.images import write_crafted
from tests.parity.harness import run_mmseg

pytestmark = pytest.mark.parity

WORKER = __import__("pathlib").Path(__file__).with_name("image_worker.py")


def test_read_rgb_equals_mmseg_opencv_colour_read(tmp_path):
    paths = write_crafted(tmp_path / "images")
    reference = run_mmseg({"files": [str(p) for p in paths]}, tmp_path, timeout=300, worker=WORKER)
    mismatched = []
    for path in paths:
        expected = reference["images"][path.name].numpy()
        ours = read_rgb(path)
        if ours.shape != expected.shape or not np.array_equal(ours, expected):
            diff = "shape" if ours.shape != expected.shape else int(np.abs(ours.astype(int) - expected).max())
            mismatched.append(f"{path.name}: {diff}")
    assert not mismatched, f"OpenCV {reference['opencv']} decodes differently: {mismatched}"
