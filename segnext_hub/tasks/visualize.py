"""Class maps to pictures: colour masks, overlays, and the three PNGs ``predict`` writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..errors import BadInputError
from ..fileio import atomic_writer

PathLike = Union[str, "os.PathLike[str]"]
# Class-index PNGs are 8-bit while every class fits below the ignore value 255.
UINT8_MAX_CLASSES = 255


def _to_numpy(array: Any) -> np.ndarray:
    """Accept numpy arrays and (CPU or GPU) tensors without importing torch here."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _check_palette(palette: Any) -> np.ndarray:
    pal = _to_numpy(palette)
    if pal.ndim != 2 or pal.shape[1] != 3 or len(pal) == 0:
        raise BadInputError(f"a palette is a (num_classes, 3) array of RGB values, got shape {pal.shape}")
    if pal.min() < 0 or pal.max() > 255:
        raise BadInputError("palette values must lie in 0..255")
    return pal.astype(np.uint8)


def colorize(mask: Any, palette: Any) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 RGB.

    Indices outside the palette (the ignore value 255 in ground truth, for one) are drawn
    black, so that a label map can be shown with the same function as a prediction.
    """
    idx = _to_numpy(mask)
    if idx.ndim != 2:
        raise BadInputError(f"a class mask is a 2-D (H, W) array, got shape {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise BadInputError(f"a class mask holds integer class indices, got dtype {idx.dtype}")
    pal = _check_palette(palette)
    # One extra black row catches every out-of-range index in a single gather.
    lut = np.concatenate([pal, np.zeros((1, 3), dtype=np.uint8)])
    safe = np.where((idx >= 0) & (idx < len(pal)), idx, len(pal)).astype(np.intp)
    return lut[safe]


def overlay(image: Any, color: Any, alpha: float = 0.5) -> np.ndarray:
    """Blend a colour mask over an RGB image: ``(1 - alpha) * image + alpha * color``."""
    img = _to_numpy(image)
    col = _to_numpy(color)
    if img.ndim != 3 or img.shape[2] != 3:
        raise BadInputError(f"overlay expects an RGB (H, W, 3) image, got shape {img.shape}")
    if col.shape != img.shape:
        raise BadInputError(f"colour mask shape {col.shape} does not match image shape {img.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise BadInputError(f"alpha must lie in [0, 1], got {alpha}")
    blended = (1.0 - alpha) * img.astype(np.float32) + alpha * col.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _png_bytes(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    # Pillow stores a 2-D uint16 array as a 16-bit greyscale PNG, uint8 as 8-bit.
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def class_index_array(mask: Any, num_classes: int) -> np.ndarray:
    """The array a class-index PNG stores: uint8, or uint16 beyond 255 classes.

    The dtype follows the class count, not the values present, so that every mask of
    one model has the same PNG format.
    """
    idx = _to_numpy(mask)
    if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
        raise BadInputError(f"a class mask is a 2-D integer array, got {idx.dtype} of shape {idx.shape}")
    dtype = np.uint8 if num_classes <= UINT8_MAX_CLASSES else np.uint16
    if idx.size and (idx.min() < 0 or idx.max() > np.iinfo(dtype).max):
        raise BadInputError(f"class mask values {idx.min()}..{idx.max()} do not fit a {np.dtype(dtype).name} PNG")
    return idx.astype(dtype)


def save_outputs(image: Any, mask: Any, palette: Any, out_dir: PathLike, stem: str,
                 alpha: float = 0.5) -> dict[str, Path]:
    """Write ``<stem>_classes.png``, ``<stem>_color.png`` and ``<stem>_overlay.png``.

    All three are encoded before the first is written, each file is written atomically
    and replaces an existing one, and a failed write removes the ones this call wrote: an
    image gets its three files or none, never a truncated PNG. Returns the paths by kind
    (``classes``/``color``/``overlay``).
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise BadInputError(f"output directory {out} does not exist")
    pal = _check_palette(palette)
    idx = class_index_array(mask, len(pal))
    img = _to_numpy(image)
    if img.shape[:2] != idx.shape:
        raise BadInputError(f"mask shape {idx.shape} does not match image shape {img.shape[:2]}")
    color = colorize(idx, pal)
    arrays = {"classes": idx, "color": color, "overlay": overlay(img, color, alpha)}
    encoded = {kind: _png_bytes(array) for kind, array in arrays.items()}
    paths: dict[str, Path] = {}
    try:
        for kind, data in encoded.items():
            path = out / f"{stem}_{kind}.png"
            with atomic_writer(path, force=True) as handle:
                handle.write(data)
            paths[kind] = path
    except BaseException:
        for path in paths.values():
            path.unlink(missing_ok=True)
        raise
    return paths
