"""OpenVINO IR export (``.xml`` + ``.bin``), checked against PyTorch, optionally int8 with NNCF.

The graph has the ONNX export's contract (:mod:`.export_onnx`): input ``image`` is the
normalised ``(N, 3, H, W)`` image, output ``logits`` the raw 1/8-size logits, and the NMF's
random bases leave the graph either as a second input ``bases`` ``(N, D, R)``
(``bases="input"``) or as one stored draw from a seeded generator (``bases="constant"``).

The IR is made by ``openvino.convert_model`` straight from the PyTorch model (no ONNX
step: measured on SegNeXt-T at 512x512, the two routes compile to graphs of the same
speed and accuracy, and this one needs no ``onnx`` package and keeps PyTorch's module
names on the nodes, which the int8 path relies on to find the NMF). Before anything is
written, OpenVINO's CPU plugin runs the fp32 graph on a seeded image and seeded bases and
its logits are compared with ``model(image, bases=...)``; above ``tolerance`` nothing is
written. The IR stores weights in float32 (no fp16 compression).

``int8=True`` then quantizes the checked graph with NNCF from the images of a calibration
folder (see :mod:`.quantize`: the whole NMF stays in float), measures the argmax agreement
with the fp32 graph on held-out images of that folder and the speed-up, and writes the
int8 graph.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..errors import BadInputError, SegnextHubError, VerificationError
from ..fileio import atomic_writer, check_destination, make_temp_dir, sha256_file
from . import quantize as q
from .export_onnx import (
    BASES_INPUT, DEFAULT_TOLERANCE, IMAGE_INPUT, OUTPUT, GraphReport, _example_inputs, _WithBasesInput,
    _WithConstantBases, bases_shape, check_graph_args, max_difference, random_bases, reference_run,
)

PathLike = Union[str, "os.PathLike[str]"]
logger = logging.getLogger(__name__)

DEFAULT_HOLDOUT = 0.25
# Seeds of the bases fed with calibration / held-out image i (bases="input" graphs).
CALIBRATION_BASES_SEED = 20_000


@dataclass
class OpenVINOExportReport(GraphReport):
    """What was written, how well OpenVINO agrees with PyTorch, and (int8) the quantization.

    ``to_dict()`` is JSON-safe.
    """

    path: str
    weights_path: str
    precision: str
    num_classes: int
    input_size: tuple[int, int]
    dynamic: bool
    bases: str
    inputs: dict[str, list[Union[int, str]]]
    outputs: dict[str, list[Union[int, str]]]
    bases_shape: tuple[int, int, int]
    bases_seed: Optional[int]
    openvino_version: str
    checked: bool
    tolerance: float
    max_abs_diff: Optional[float] = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    quantization: Optional[dict[str, Any]] = None
    sha256: str = ""
    weights_sha256: str = ""
    size_bytes: int = 0


def export_openvino(
    model: nn.Module,
    out_path: PathLike,
    *,
    size: tuple[int, int] = (512, 512),
    dynamic: bool = False,
    bases: str = "input",
    bases_seed: int = 0,
    check: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    check_seed: int = 0,
    int8: bool = False,
    calib: Optional[PathLike] = None,
    holdout: float = DEFAULT_HOLDOUT,
    min_agreement: Optional[float] = None,
    preset: str = "performance",
    measure_speed: bool = True,
    force: bool = False,
) -> OpenVINOExportReport:
    """Write ``model`` as OpenVINO IR at ``out_path`` (``.xml``; weights beside it in ``.bin``).

    Args:
        model: a SegNeXt (exact model); copied, so the caller's module is untouched.
        out_path: the ``.xml`` to write; the ``.bin`` of the same stem is written with it.
        size: (H, W) traced; the only size a static graph accepts (its batch is always
            free), and the calibration size.
        dynamic: free batch, height and width (the check then also runs batch 2 at a larger
            size).
        bases: ``"input"`` (a second input ``bases``) or ``"constant"`` (one stored draw).
        bases_seed: seed of the stored draw for ``bases="constant"``.
        check: compare OpenVINO's fp32 logits with PyTorch's before writing. Only an
            unchecked graph can skip it; int8 always checks the fp32 graph it starts from.
        tolerance: largest accepted absolute logit difference of that check.
        check_seed: seed of the check's image (and bases).
        int8: quantize with NNCF (needs ``calib``).
        calib: folder of calibration images (its own files, not subfolders); a ``holdout`` share of
            them is kept out of calibration to measure the argmax agreement.
        holdout: share of ``calib`` held out (at least one image each way).
        min_agreement: with ``int8``, fail (and write nothing) when the held-out argmax
            agreement is below this fraction; None only reports it.
        preset: NNCF preset, ``"performance"`` or ``"mixed"``.
        measure_speed: with ``int8``, time fp32 and int8 forwards on one calibration input
            (a few interleaved runs; indicative only, the benchmark is the reference).
        force: overwrite existing files.

    Returns:
        An :class:`OpenVINOExportReport`; ``quantization`` holds the int8 figures.

    Raises:
        BadInputError: bad arguments, a missing package, an unusable calibration folder,
            an existing output without ``force``.
        VerificationError: OpenVINO's fp32 logits differ from PyTorch's by more than
            ``tolerance``, the NMF could not be kept out of quantization, or the agreement
            is below ``min_agreement``. Nothing is written.
    """
    out = Path(out_path)
    height, width = _check_args(out, size, bases, tolerance, force, int8, calib, min_agreement)
    ov = _openvino()
    images = q.list_images(Path(calib)) if int8 else []
    calib_paths, held_paths = q.split_holdout(images, holdout) if int8 else ([], [])
    net = copy.deepcopy(model).float().cpu().eval()
    num_classes = int(net.decode_head.num_classes)
    stored = random_bases(net, 1, bases_seed) if bases == "constant" else None
    wrapper = (_WithConstantBases(net, stored) if stored is not None else _WithBasesInput(net)).eval()
    graph = _convert(ov, wrapper, net, (height, width), bases, dynamic)
    report = OpenVINOExportReport(
        path=str(out), weights_path=str(out.with_suffix(".bin")), precision="int8" if int8 else "fp32",
        num_classes=num_classes, input_size=(height, width), dynamic=dynamic, bases=bases,
        inputs=_shapes(graph.inputs), outputs=_shapes(graph.outputs, "_8"), bases_shape=bases_shape(net),
        bases_seed=bases_seed if bases == "constant" else None, openvino_version=ov.get_version(),
        checked=check or int8, tolerance=tolerance,
    )
    core = ov.Core()
    if report.checked:
        shapes = [(1, 3, height, width)] + ([(2, 3, height + 32, width + 64)] if dynamic else [])
        compiled = _compile(core, graph)
        for i, shape in enumerate(shapes):
            inputs = _example_inputs(net, shape, bases, check_seed + i)
            diff = _compare(compiled, net, inputs, stored)
            report.checks.append({"shape": list(shape), "max_abs_diff": diff})
        report.max_abs_diff = max(c["max_abs_diff"] for c in report.checks)
        if not report.max_abs_diff <= tolerance:  # also catches NaN
            raise VerificationError(f"OpenVINO differs from PyTorch by {report.max_abs_diff:.3g} "
                                    f"(tolerance {tolerance:g}); {out} was not written")
    if int8:
        graph, report.quantization = _quantize(ov, core, graph, net, (height, width), bases,
                                               calib_paths, held_paths, preset, measure_speed)
        agreement = report.quantization["argmax_agreement"]
        if min_agreement is not None and not agreement >= min_agreement:
            raise VerificationError(f"int8 argmax agreement with fp32 on {len(held_paths)} held-out image(s) is "
                                    f"{agreement:.2%}, below --min-agreement {min_agreement:.2%}; "
                                    f"{out} was not written")
    _set_metadata(graph, net, report)
    _write(ov, graph, out, force)
    report.sha256 = sha256_file(out)
    report.weights_sha256 = sha256_file(out.with_suffix(".bin"))
    report.size_bytes = out.stat().st_size + out.with_suffix(".bin").stat().st_size
    return report


def _check_args(out: Path, size: Any, bases: str, tolerance: float, force: bool, int8: bool,
                calib: Optional[PathLike], min_agreement: Optional[float]) -> tuple[int, int]:
    height, width = check_graph_args(size, bases, tolerance)
    if out.suffix.lower() != ".xml":
        raise BadInputError(f"OpenVINO IR output should end in .xml (weights go beside it in .bin), got {out.name}")
    if int8 and calib is None:
        raise BadInputError("int8 quantization needs calibration images (--calib DIR)")
    if not int8 and calib is not None:
        raise BadInputError("calibration images (--calib) are only used with int8 (--int8)")
    if min_agreement is not None and not (int8 and 0.0 <= min_agreement <= 1.0):
        raise BadInputError("min_agreement needs int8 and must lie in [0, 1]")
    check_destination(out, force=force)
    check_destination(out.with_suffix(".bin"), force=force)
    return height, width


def _openvino():
    try:
        import openvino
    except ImportError:
        raise BadInputError("OpenVINO export needs the 'openvino' package: pip install 'segnext-hub[openvino]'") from None
    return openvino


def _convert(ov: Any, wrapper: nn.Module, net: nn.Module, size: tuple[int, int], bases: str, dynamic: bool) -> Any:
    """``openvino.convert_model`` on the wrapper, with named inputs and the output named ``logits``."""
    height, width = size
    batch = 2 if dynamic else 1  # trace with 2, so nothing specialises on a batch of one
    example = _example_inputs(net, (batch, 3, height, width), bases, 0)
    _, dim, rank = bases_shape(net)
    # The batch stays free even in a "static" graph: OpenVINO 2026.4's CPU plugin crashes
    # (SIGSEGV in compile_model) on this frontend's SegNeXt graph once the batch is static.
    spec = [(IMAGE_INPUT, [-1, 3, -1, -1] if dynamic else [-1, 3, height, width])]
    if bases == "input":
        spec.append((BASES_INPUT, [-1, dim, rank]))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on shape checks; the check decides
        try:
            graph = ov.convert_model(wrapper, example_input=example, input=spec)
        except Exception as err:  # the converter raises many unrelated types
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise SegnextHubError(f"openvino.convert_model failed: {type(err).__name__}: {first}") from err
    graph.outputs[0].get_tensor().set_names({OUTPUT})
    return graph


def _shapes(ports: Any, suffix: str = "") -> dict[str, list[Union[int, str]]]:
    """Port name -> dims, free ones named as in the ONNX export (``height_8``: 1/8 of ``height``)."""
    names = ("batch", "", "height" + suffix, "width" + suffix)
    out = {}
    for port in ports:
        dims: list[Union[int, str]] = []
        for i, d in enumerate(port.get_partial_shape()):
            if d.is_static:
                dims.append(d.get_length())
            else:
                dims.append("batch" if i == 0 else names[i] if i < len(names) and names[i] else f"dim{i}")
        out[port.get_any_name()] = dims
    return out


def _compile(core: Any, graph: Any, threads: Optional[int] = None) -> Any:
    """CPU plugin with float32 inference: OpenVINO would otherwise run bf16 on AMX/AVX512-BF16 CPUs."""
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(graph, "CPU", config)


def runner(compiled: Any) -> Callable[[dict], np.ndarray]:
    """feeds -> logits of a compiled model (one infer request, reused)."""
    request = compiled.create_infer_request()

    def run(feeds: dict) -> np.ndarray:
        return request.infer(feeds)[OUTPUT].copy()
    return run


def _compare(compiled: Any, net: nn.Module, inputs: tuple[torch.Tensor, ...], stored: Optional[torch.Tensor]) -> float:
    """Largest |OpenVINO - PyTorch| on one input; both see exactly the same bases."""
    feeds, expected = reference_run(net, inputs, stored)
    return max_difference("OpenVINO", runner(compiled)(feeds), expected)


def _quantize(ov: Any, core: Any, graph: Any, net: nn.Module, size: tuple[int, int], bases: str,
              calib_paths: list[Path], held_paths: list[Path], preset: str,
              measure_speed: bool) -> tuple[Any, dict[str, Any]]:
    calibration = [q.preprocess(p, size) for p in calib_paths]
    held = [q.preprocess(p, size) for p in held_paths]

    def bases_from(offset: int) -> Optional[Callable[[int], np.ndarray]]:
        if bases == "constant":
            return None
        return lambda i: random_bases(net, 1, CALIBRATION_BASES_SEED + offset + i).numpy()

    ignored = q.nmf_node_names(graph)
    with _quiet_nncf():
        quantized = q.quantize(graph, calibration, bases_from(0), ignored=ignored, preset=preset)
    fp32, int8 = _compile(core, graph), _compile(core, quantized)
    agreement, pixels = q.argmax_agreement(runner(fp32), runner(int8), held, bases_from(len(calibration)))
    nmf_types = sorted({op.get_type_name() for op in graph.get_ordered_ops() if op.get_friendly_name() in set(ignored)})
    info: dict[str, Any] = {
        "nncf_version": _nncf_version(), "preset": preset,
        "calibration_images": len(calibration), "held_out_images": len(held),
        "argmax_agreement": agreement, "agreement_pixels": pixels,
        "float_nmf_nodes": len(ignored), "float_nmf_op_types": nmf_types,
        "ops_reading_int8": q.quantized_op_types(quantized),
    }
    if measure_speed:
        feeds = {IMAGE_INPUT: calibration[0].image}
        if bases == "input":
            feeds[BASES_INPUT] = random_bases(net, 1, CALIBRATION_BASES_SEED).numpy()
        run32, run8 = runner(fp32), runner(int8)
        times = q.median_latencies({"fp32": lambda: run32(feeds), "int8": lambda: run8(feeds)})
        info.update(fp32_ms=times["fp32"] * 1000, int8_ms=times["int8"] * 1000,
                    speedup=times["fp32"] / times["int8"])
    return quantized, info


def _nncf_version() -> str:
    try:
        import nncf
    except ImportError:  # pragma: no cover - quantize() already needed it
        return "unknown"
    return str(nncf.__version__)


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs at INFO and draws progress bars on rich's global console; a library must not
    print, and the report says what happened. Both are restored afterwards."""
    nncf_logger = logging.getLogger("nncf")
    old = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    console = None
    try:
        import rich

        console = rich.get_console()
    except ImportError:  # pragma: no cover - NNCF depends on rich
        pass
    was_quiet = console.quiet if console is not None else False
    try:
        if console is not None:
            console.quiet = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        nncf_logger.setLevel(old)
        if console is not None:
            console.quiet = was_quiet


def _set_metadata(graph: Any, net: nn.Module, report: OpenVINOExportReport) -> None:
    """What a reader of the IR needs: the bases contract, classes, preprocessing, provenance."""
    values = {
        "version": __version__, "bases": report.bases, "num_classes": report.num_classes,
        "precision": report.precision, "input": "normalised RGB image (ImageNet mean/std, 0-255 scale)",
        "output": "logits at 1/8 size; resize bilinearly (align_corners=False) and take the argmax",
        "bases_shape": list(report.bases_shape),
    }
    if report.bases_seed is not None:
        values["bases_seed"] = report.bases_seed
    config = getattr(net, "segnext_config", None)  # an ArtifactConfig, or None for a model built directly
    for key in ("variant", "md_r"):
        value = getattr(config, key, None)
        if value is not None:
            values[key] = value
    for key, value in values.items():
        graph.set_rt_info(str(value), ["segnext_hub", key])


def _write(ov: Any, graph: Any, out: Path, force: bool) -> None:
    """Save into a temp folder beside ``out``, then move ``.bin`` and ``.xml`` into place.

    The ``.xml`` goes last: it is what readers open, so a reader never finds an ``.xml``
    whose weights are missing; if it cannot be written the new ``.bin`` is removed again.
    """
    tmp = make_temp_dir(out.parent, f".{out.stem}-openvino-")
    try:
        saved = tmp / "model.xml"
        try:
            ov.save_model(graph, str(saved), compress_to_fp16=False)
        except Exception as err:  # noqa: BLE001 - a storage problem in the temp folder
            raise BadInputError(f"cannot write {out}: {err}") from err
        weights = out.with_suffix(".bin")
        _copy(saved.with_suffix(".bin"), weights, force)
        try:
            _copy(saved, out, force)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                weights.unlink()
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy(src: Path, dst: Path, force: bool) -> None:
    with atomic_writer(dst, force=force, expected_size=src.stat().st_size) as handle, open(src, "rb") as source:
        shutil.copyfileobj(source, handle, 1 << 20)


def read_metadata(path: PathLike) -> dict[str, str]:
    """The ``segnext_hub`` section of an IR's runtime info (what :func:`export_openvino` stored).

    Args:
        path: an ``.xml`` written by :func:`export_openvino`.

    Returns:
        Key -> value (strings, as OpenVINO stores them); empty for a foreign IR.

    Raises:
        BadInputError: OpenVINO is missing or cannot read the file.
    """
    ov = _openvino()
    try:
        graph = ov.Core().read_model(str(path))
    except Exception as err:  # noqa: BLE001 - OpenVINO's reader raises RuntimeError subtypes
        raise BadInputError(f"cannot read OpenVINO IR {path}: {str(err).splitlines()[0] if str(err) else err}") from None
    if not graph.has_rt_info(["segnext_hub"]):
        return {}
    section = graph.get_rt_info(["segnext_hub"])
    return {str(k): str(v.astype(str)) for k, v in section.astype(dict).items()}
