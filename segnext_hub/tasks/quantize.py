"""int8 post-training quantization of an OpenVINO SegNeXt graph with NNCF, NMF kept in float.

NNCF inserts FakeQuantize nodes on the inputs of the ops it can run in int8 (convolutions,
matrix multiplies and, on CPU, some element-wise Multiply/Add/Divide) from activation
ranges it measures on calibration images. The decode head's NMF ("Hamburger") must stay
out of that entirely:

* its multiplicative updates ``coef * num / (den + 1e-6)`` divide by quantities that start
  near zero and shrink; an int8 grid over the calibration range rounds small denominators
  to 0 or to a neighbouring step, and the error compounds over the 7 + 1 iterations;
* the bases come from a random draw at every forward, so calibration ranges measured on a
  few draws do not cover the next one;
* ignoring only its MatMul nodes is not enough: NNCF then still quantizes the Multiply and
  Divide of the updates (seen with NNCF 3.x).

So every node of the NMF subgraph, from the bases input to the reconstruction
``bases @ coef^T``, goes into NNCF's ignored scope. The graph is produced from the exact
model by ``openvino.convert_model``, which names each node after the PyTorch module that
made it, so the subgraph is the set of nodes under the NMF module's scope
(``decode_head.hamburger.ham``); :func:`nmf_node_names` refuses a graph in which that finds
nothing, and :func:`fake_quantized_nmf_nodes` checks the result.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BadInputError, VerificationError
from ..models.preprocessing import normalise, resize_like_opencv
from ..training.data import IMAGE_SUFFIXES, read_image

logger = logging.getLogger(__name__)

# Scope that openvino.convert_model gives the NMF module's nodes (the export wraps the model
# as `model`), e.g. "__module.model.decode_head.hamburger.ham/aten::bmm/MatMul".
NMF_SCOPE = "decode_head.hamburger.ham/"
FAKE_QUANTIZE_TYPES = ("FakeQuantize", "FakeConvert")
# Below two images there is nothing to hold out.
MIN_CALIBRATION_IMAGES = 2


@dataclass
class CalibrationSample:
    """One preprocessed image: the graph's ``image`` input and the valid (unpadded) 1/8 region."""

    name: str
    image: np.ndarray  # (1, 3, H, W) float32, normalised, zero-padded to the graph size
    valid: tuple[int, int]  # rows, columns of the 1/8-size logits that cover real pixels


def list_images(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted so the split is reproducible.

    Not recursive: a dataset root often holds label PNGs in a subfolder, which must not
    be taken for images.
    """
    if not folder.is_dir():
        raise BadInputError(f"calibration folder {folder} does not exist or is not a folder")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if len(images) < MIN_CALIBRATION_IMAGES:
        raise BadInputError(f"{folder} holds {len(images)} image(s) ({', '.join(IMAGE_SUFFIXES)}); "
                            f"int8 calibration needs at least {MIN_CALIBRATION_IMAGES} "
                            "(some are held out to measure agreement)")
    return images


def split_holdout(images: Sequence[Path], fraction: float) -> tuple[list[Path], list[Path]]:
    """(calibration, held out): every k-th image is held out, at least one on each side."""
    if not 0.0 < fraction < 1.0:
        raise BadInputError(f"holdout fraction must lie strictly between 0 and 1, got {fraction}")
    count = min(max(1, round(len(images) * fraction)), len(images) - 1)
    step = len(images) / count
    held = {int(i * step + step / 2) for i in range(count)}
    return ([p for i, p in enumerate(images) if i not in held], [p for i, p in enumerate(images) if i in held])


def preprocess(path: Path, size: tuple[int, int]) -> CalibrationSample:
    """The model's test preprocessing at the graph's size.

    As ``SegNeXt.predict`` prepares an image, with the graph size as the resize bound: a
    keep-ratio bilinear resize (OpenCV's fixed-point arithmetic, as MMSeg) to fit within
    ``size`` (H, W), ImageNet
    normalisation, then zero padding (in normalised space) at the bottom and right up to
    ``size`` -- so one static graph takes every image.
    """
    rgb = read_image(path)
    chw = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()
    height, width = size
    factor = min(height / chw.shape[1], width / chw.shape[2])
    rows = min(height, int(chw.shape[1] * factor + 0.5))
    cols = min(width, int(chw.shape[2] * factor + 0.5))
    if (rows, cols) != tuple(chw.shape[1:]):
        chw = resize_like_opencv(chw, rows, cols)
    x = F.pad(normalise(chw), (0, width - cols, 0, height - rows), value=0.0)
    return CalibrationSample(path.name, x.unsqueeze(0).numpy(), (-(-rows // 8), -(-cols // 8)))


def nmf_node_names(model: Any) -> list[str]:
    """Friendly names of every node of the NMF subgraph (bases in, reconstruction out).

    Raises:
        VerificationError: no node carries the NMF's scope, so the graph was not made the
            way this module expects and quantizing it would quantize the NMF.
    """
    names = [op.get_friendly_name() for op in model.get_ordered_ops()
             if NMF_SCOPE in op.get_friendly_name() and op.get_type_name() not in ("Parameter", "Result")]
    if not any(model_op_type(model, n) == "MatMul" for n in names):
        raise VerificationError(f"found no NMF nodes (scope {NMF_SCOPE!r}) in the graph; refusing to "
                                "quantize a graph whose Hamburger cannot be kept in float")
    return names


def model_op_type(model: Any, name: str) -> Optional[str]:
    for op in model.get_ordered_ops():
        if op.get_friendly_name() == name:
            return op.get_type_name()
    return None


def fake_quantized_nmf_nodes(model: Any) -> list[str]:
    """NMF nodes that read a FakeQuantize output in a quantized graph (should be none)."""
    hits = []
    for op in model.get_ordered_ops():
        if NMF_SCOPE not in op.get_friendly_name():
            continue
        for value in op.input_values():
            if value.get_node().get_type_name() in FAKE_QUANTIZE_TYPES:
                hits.append(op.get_friendly_name())
                break
    return hits


def quantized_op_types(model: Any) -> dict[str, int]:
    """How many ops of each type read a FakeQuantize output: what runs in int8."""
    counts: dict[str, int] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in FAKE_QUANTIZE_TYPES:
            continue
        if any(v.get_node().get_type_name() in FAKE_QUANTIZE_TYPES for v in op.input_values()):
            counts[op.get_type_name()] = counts.get(op.get_type_name(), 0) + 1
    return dict(sorted(counts.items()))


def quantize(model: Any, samples: Sequence[CalibrationSample], bases_for: Optional[Callable[[int], np.ndarray]],
             *, ignored: Sequence[str], preset: str = "performance") -> Any:
    """NNCF post-training quantization of ``model`` (an ``openvino.Model``) to int8.

    Args:
        model: the fp32 graph, already checked against PyTorch.
        samples: calibration images (every one is used: NNCF's subset size is their count).
        bases_for: sample index -> the ``bases`` input, or None when the bases are a
            constant in the graph.
        ignored: node names NNCF must leave in float (:func:`nmf_node_names`).
        preset: NNCF's "performance" (symmetric activations, the CPU default) or "mixed".

    Returns:
        The quantized ``openvino.Model``.

    Raises:
        BadInputError: NNCF is not installed or the preset is unknown.
        VerificationError: NNCF put a quantizer inside the NMF anyway.
    """
    nncf = _nncf()
    presets = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
    if preset not in presets:
        raise BadInputError(f"preset must be one of {', '.join(presets)}, got {preset!r}")
    items = list(range(len(samples)))

    def feed(i: int) -> dict[str, np.ndarray]:
        inputs = {"image": samples[i].image}
        if bases_for is not None:
            inputs["bases"] = bases_for(i)
        return inputs

    quantized = nncf.quantize(
        model, nncf.Dataset(items, feed), preset=presets[preset], subset_size=len(items),
        ignored_scope=nncf.IgnoredScope(names=list(ignored), validate=True),
    )
    leaked = fake_quantized_nmf_nodes(quantized)
    if leaked:
        raise VerificationError(f"NNCF quantized {len(leaked)} NMF input(s) despite the ignored scope, "
                                f"e.g. {leaked[0]}")
    return quantized


def _nncf():
    try:
        import nncf
    except ImportError:
        raise BadInputError("int8 quantization needs NNCF: pip install 'segnext-hub[openvino]'") from None
    logging.getLogger("nncf").setLevel(logging.WARNING)
    return nncf


def argmax_agreement(reference: Callable[[dict], np.ndarray], candidate: Callable[[dict], np.ndarray],
                     samples: Sequence[CalibrationSample],
                     bases_for: Optional[Callable[[int], np.ndarray]]) -> tuple[float, int]:
    """Fraction of valid 1/8-size logit pixels whose argmax class is the same, and their count.

    Both models see the same image and the same bases, so only quantization differs.
    """
    same = total = 0
    for i, sample in enumerate(samples):
        feeds = {"image": sample.image}
        if bases_for is not None:
            feeds["bases"] = bases_for(i)
        rows, cols = sample.valid
        a = reference(feeds)[:, :, :rows, :cols].argmax(1)
        b = candidate(feeds)[:, :, :rows, :cols].argmax(1)
        same += int((a == b).sum())
        total += a.size
    return same / total, total


def median_latencies(runners: dict[str, Callable[[], object]], repeats: int = 5) -> dict[str, float]:
    """Median seconds per call, one warm-up each, calls interleaved so drifting load hits all alike."""
    for run in runners.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
