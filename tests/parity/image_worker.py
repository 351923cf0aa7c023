"""Decodes image files as MMSeg 1.2.2's ``LoadImageFromFile`` does, inside the parity virtualenv.

Usage: python image_worker.py JOB.json, where the job names ``files`` and ``out``. Each file
is read with ``mmcv.imfrombytes(bytes, flag='color', backend='cv2')`` (MMSeg's default
``imdecode_backend``) and, as a cross-check, with ``cv2.imdecode(..., IMREAD_COLOR)``; the
two must agree. The RGB arrays (BGR flipped) are saved with torch.save, by file name, with
the OpenCV version.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# First: mmseg_worker (same folder) stands in for mmcv-lite's missing compiled ops.
from mmseg_worker import config_path  # noqa: F401,I001

import cv2  # noqa: E402
import mmcv  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    out = {"opencv": cv2.__version__, "images": {}}
    for name in job["files"]:
        data = Path(name).read_bytes()
        bgr = mmcv.imfrombytes(data, flag="color", backend="cv2")
        direct = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(bgr, direct), f"mmcv and cv2 disagree on {name}"
        out["images"][Path(name).name] = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1]))
    torch.save(out, job["out"])


if __name__ == "__main__":
    main()
