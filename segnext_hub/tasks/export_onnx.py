"""ONNX export of a SegNeXt, with the NMF's random bases made explicit, and a check in onnxruntime.

The decode head draws random NMF bases at every forward. An ONNX graph with a random op
would give a different answer on every run and could not be checked against PyTorch, so
the bases leave the graph in one of two ways:

* ``bases="input"``: a second graph input ``bases`` of shape ``(N, D, R)`` (N the batch,
  D the Hamburger width, R the NMF rank; e.g. ``(N, 256, 16)`` for SegNeXt-T). The
  caller supplies non-negative random values, L2-normalised over D -- exactly what MMSeg
  draws: ``F.normalize(torch.rand(N, D, R), dim=1)``. This keeps the model's
  run-to-run behaviour under the caller's control.
* ``bases="constant"``: one ``(1, D, R)`` draw from ``torch.Generator().manual_seed(bases_seed)``
  is stored in the graph and repeated over the batch, so the graph is deterministic with a
  single ``image`` input. The seed is recorded in the report.

The graph's input ``image`` is the *normalised* image ``(N, 3, H, W)`` (ImageNet mean/std
on the 0-255 scale, RGB) and its output ``logits`` is ``(N, num_classes, ceil(H/8),
ceil(W/8))`` -- the model's raw 1/8-resolution logits; resize them bilinearly
(align_corners=False) to the image size and take the argmax, as ``SegNeXt.predict`` does.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BadInputError, SegnextHubError, VerificationError
from ..fileio import atomic_writer, check_destination, sha256_file

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_TOLERANCE = 1e-4
IMAGE_INPUT = "image"
BASES_INPUT = "bases"
OUTPUT = "logits"
# Ops that would make the graph non-deterministic; none may survive the export.
RANDOM_OPS = frozenset({
    "RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Multinomial", "Bernoulli",
})
EXPORTERS = ("auto", "dynamo", "torchscript")
# The stride-32 stage needs at least one pixel.
MIN_SIDE = 32


class GraphReport:
    """What the ONNX and OpenVINO export reports share: ``to_dict()``, JSON-safe."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)  # type: ignore[call-overload] - subclasses are dataclasses
        out["input_size"] = list(out["input_size"])
        out["bases_shape"] = list(out["bases_shape"])
        return out


@dataclass
class ExportReport(GraphReport):
    """What was written and how well onnxruntime agrees with PyTorch. ``to_dict()`` is JSON-safe."""

    path: str
    num_classes: int
    input_size: tuple[int, int]
    dynamic: bool
    bases: str
    inputs: dict[str, list[Union[int, str]]]
    outputs: dict[str, list[Union[int, str]]]
    bases_shape: tuple[int, int, int]
    bases_seed: Optional[int]
    opset: int
    exporter: str
    checked: bool
    tolerance: float
    max_abs_diff: Optional[float] = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    sha256: str = ""
    size_bytes: int = 0
    fallback_reason: Optional[str] = None


class _WithBasesInput(nn.Module):
    """``forward(image, bases)``: the caller's bases replace the random draw."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, bases: Tensor) -> Tensor:
        return self.model(image, bases=bases)


class _WithConstantBases(nn.Module):
    """``forward(image)``: one stored draw of bases, repeated for every image of the batch."""

    def __init__(self, model: nn.Module, bases: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("nmf_bases", bases)

    def forward(self, image: Tensor) -> Tensor:
        return self.model(image, bases=self.nmf_bases.repeat(image.shape[0], 1, 1))


def bases_shape(model: nn.Module, batch: int = 1) -> tuple[int, int, int]:
    """``(batch * S, D, R)``: the shape the NMF expects for its bases (S is 1 in every release)."""
    ham = model.decode_head.hamburger.ham
    width = model.decode_head.hamburger.ham_in.conv.out_channels
    return (batch * ham.groups, width // ham.groups, ham.rank)


def random_bases(model: nn.Module, batch: int = 1, seed: int = 0) -> Tensor:
    """L2-normalised uniform bases, drawn like MMSeg's NMF draws them, from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.rand(bases_shape(model, batch), generator=gen), dim=1)


def export_onnx(
    model: nn.Module,
    out_path: PathLike,
    *,
    size: tuple[int, int] = (512, 512),
    dynamic: bool = False,
    bases: str = "input",
    bases_seed: int = 0,
    opset: int = 18,
    exporter: str = "auto",
    check: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    check_seed: int = 0,
    force: bool = False,
    progress: Optional[bool] = None,
) -> ExportReport:
    """Export ``model`` to ``out_path`` and (``check=True``) prove onnxruntime computes the same.

    ``size`` is the (H, W) traced, and the only size a static graph accepts; ``dynamic``
    makes batch, height and width free (the check then also runs a second, larger size
    with batch 2). ``exporter="dynamo"`` is torch's maintained ``torch.export`` path
    (torch >= 2.5 with onnxscript; its lowest native opset is 18); ``"torchscript"`` is
    the legacy tracer: much faster, deprecated by torch but the only one before 2.5.
    ``"auto"`` uses dynamo where available and falls back to the tracer if dynamo fails
    (the report names the exporter used and why it fell back).

    The check feeds the same seeded image and bases to ``model(x, bases=...)`` and to
    onnxruntime and fails with :class:`VerificationError` when the largest absolute
    logit difference exceeds ``tolerance``; the file is then not written, because a
    graph that computes something else is worse than none. The model is copied, so the
    caller's module (device, mode) is untouched. ``progress`` None shows the steps (export,
    each check, write) as a bar on a terminal only; every step is also a log line, since an
    export takes about a minute on a CPU.
    """
    from ..progress import progress_bar

    out = Path(out_path)
    height, width = _check_args(out, size, bases, exporter, tolerance, force)
    net = copy.deepcopy(model).float().cpu().eval()
    num_classes = int(net.decode_head.num_classes)
    stored = random_bases(net, 1, bases_seed) if bases == "constant" else None
    wrapper = (_WithConstantBases(net, stored) if stored is not None else _WithBasesInput(net)).eval()

    # Trace with batch 2 for dynamic graphs: torch.export specialises a size-1 dimension.
    trace_batch = 2 if dynamic else 1
    example = _example_inputs(net, (trace_batch, 3, height, width), bases, check_seed)
    shapes = [(1, 3, height, width)] + ([(2, 3, height + 32, width + 64)] if dynamic else [])
    bar = progress_bar(1 + (len(shapes) if check else 0) + 1, "export", progress, unit="step")
    with bar, tempfile.TemporaryDirectory(prefix=".onnx-export-", dir=out.parent) as tmp:
        tmp_file = Path(tmp) / "model.onnx"
        _step(bar, f"tracing {height}x{width} with the {exporter} exporter")
        used, fallback = _export_with(exporter, wrapper, example, tmp_file, bases=bases, dynamic=dynamic, opset=opset)
        graph_inputs, graph_outputs, found_opset = _inspect_graph(tmp_file)
        report = ExportReport(
            path=str(out), num_classes=num_classes, input_size=(height, width), dynamic=dynamic,
            bases=bases, inputs=graph_inputs, outputs=graph_outputs, bases_shape=bases_shape(net),
            bases_seed=bases_seed if bases == "constant" else None, opset=found_opset,
            exporter=used, checked=check, tolerance=tolerance, fallback_reason=fallback,
        )
        if check:
            for i, shape in enumerate(shapes):
                _step(bar, f"checking onnxruntime against PyTorch at {'x'.join(map(str, shape))}")
                inputs = _example_inputs(net, shape, bases, check_seed + i)
                diff = _compare(tmp_file, net, inputs, stored)
                report.checks.append({"shape": list(shape), "max_abs_diff": diff})
            report.max_abs_diff = max(c["max_abs_diff"] for c in report.checks)
            if not report.max_abs_diff <= tolerance:  # also catches NaN
                raise VerificationError(
                    f"onnxruntime differs from PyTorch by {report.max_abs_diff:.3g} "
                    f"(tolerance {tolerance:g}); {out} was not written"
                )
        _step(bar, f"writing {out}")
        with atomic_writer(out, force=force) as handle, open(tmp_file, "rb") as src:
            shutil.copyfileobj(src, handle, 1 << 20)
    report.sha256 = sha256_file(out)
    report.size_bytes = out.stat().st_size
    return report


def _step(bar: Any, what: str) -> None:
    """One export step: a log line, and the bar (when shown) moves on and names it."""
    logging.getLogger(__name__).info("export: %s", what)
    bar.set_description(f"export: {what}")
    bar.update()  # counts steps begun: the bar reads "step k of n" while step k runs


def check_graph_args(size: Any, bases: str, tolerance: float) -> tuple[int, int]:
    """The arguments every graph export takes (ONNX, OpenVINO): ``(height, width)``.

    Raises:
        BadInputError: an unknown bases mode, a size that is not two integers of at least
            :data:`MIN_SIDE`, or a tolerance that is not positive.
    """
    if bases not in ("input", "constant"):
        raise BadInputError(f"bases must be 'input' or 'constant', got {bases!r}")
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise BadInputError(f"size must be two integers (H, W), got {size!r}") from None
    if min(height, width) < MIN_SIDE:
        raise BadInputError(f"size must be at least {MIN_SIDE}x{MIN_SIDE}, got {height}x{width}")
    if not tolerance > 0:
        raise BadInputError(f"tolerance must be positive, got {tolerance}")
    return height, width


def _check_args(out: Path, size: Any, bases: str, exporter: str, tolerance: float,
                force: bool) -> tuple[int, int]:
    height, width = check_graph_args(size, bases, tolerance)
    if exporter not in EXPORTERS:
        raise BadInputError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if out.suffix.lower() != ".onnx":
        raise BadInputError(f"output file should end in .onnx, got {out.name}")
    check_destination(out, force=force)
    return height, width


def _example_inputs(net: nn.Module, shape: tuple[int, int, int, int], bases: str,
                    seed: int) -> tuple[Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(shape, generator=gen)
    if bases == "constant":
        return (image,)
    return image, random_bases(net, shape[0], seed + 1000)


def dynamo_available() -> bool:
    """torch >= 2.5 takes ``dynamo=`` in ``torch.onnx.export``; the path also needs onnxscript."""
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        return False
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def _export_with(exporter: str, wrapper: nn.Module, example: tuple[Tensor, ...], path: Path, *,
                 bases: str, dynamic: bool, opset: int) -> tuple[str, Optional[str]]:
    """Run the requested exporter; returns (exporter used, why auto fell back or None)."""
    if exporter == "dynamo" and not dynamo_available():
        raise BadInputError("the dynamo exporter needs torch >= 2.5 and onnxscript (pip install onnxscript)")
    if exporter != "auto":
        _run_exporter(wrapper, example, path, bases=bases, dynamic=dynamic, opset=opset, exporter=exporter)
        return exporter, None
    if not dynamo_available():
        reason = "dynamo exporter unavailable (needs torch >= 2.5 and onnxscript)"
    else:
        try:
            _run_exporter(wrapper, example, path, bases=bases, dynamic=dynamic, opset=opset, exporter="dynamo")
            return "dynamo", None
        except SegnextHubError as err:
            reason = str(err)
    _run_exporter(wrapper, example, path, bases=bases, dynamic=dynamic, opset=opset, exporter="torchscript")
    return "torchscript", reason


def _run_exporter(wrapper: nn.Module, example: tuple[Tensor, ...], path: Path, *, bases: str,
                  dynamic: bool, opset: int, exporter: str) -> None:
    names = [IMAGE_INPUT] + ([BASES_INPUT] if bases == "input" else [])
    kwargs: dict[str, Any] = dict(input_names=names, output_names=[OUTPUT], opset_version=opset)
    if exporter == "dynamo":
        kwargs["dynamo"] = True
        kwargs["verbose"] = False
        # One self-contained file: by default the dynamo path puts weights beside it.
        kwargs["external_data"] = False
        if dynamic:
            batch = torch.export.Dim("batch", min=1)
            image_dims = {0: batch, 2: torch.export.Dim("height", min=MIN_SIDE),
                          3: torch.export.Dim("width", min=MIN_SIDE)}
            shapes: dict[str, Any] = {"image": image_dims}
            if bases == "input":
                shapes["bases"] = {0: batch}
            kwargs["dynamic_shapes"] = shapes
    else:
        if "dynamo" in inspect.signature(torch.onnx.export).parameters:
            kwargs["dynamo"] = False  # torch >= 2.9 would otherwise pick dynamo
        if dynamic:
            axes = {IMAGE_INPUT: {0: "batch", 2: "height", 3: "width"}, OUTPUT: {0: "batch", 2: "height_8", 3: "width_8"}}
            if bases == "input":
                axes[BASES_INPUT] = {0: "batch"}
            kwargs["dynamic_axes"] = axes
    with torch.no_grad(), warnings.catch_warnings(), _quiet_exporter_logs():
        # Both exporters warn about their own internals (deprecations, traced shape
        # arithmetic, torchvision ops they skip); the check decides whether the graph is right.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(wrapper, example, str(path), **kwargs)
        except Exception as err:  # exporters raise many unrelated types
            first_line = str(err).splitlines()[0] if str(err) else ""
            raise SegnextHubError(f"torch.onnx.export ({exporter}) failed: {type(err).__name__}: {first_line}") from err


# torch re-configures its loggers' levels during export, so a filter does the silencing.
_NOISY_LOGGERS = ("torch.onnx", "torch.onnx._internal.exporter._registration")


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """Drop the exporter's log records below ERROR (e.g. 'torchvision is not installed')."""
    def at_least_error(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    for logger in loggers:
        logger.addFilter(at_least_error)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(at_least_error)


def _onnx():
    try:
        import onnx
    except ImportError:
        raise BadInputError("ONNX export needs the 'onnx' package: pip install onnx onnxruntime onnxscript") from None
    return onnx


def _inspect_graph(path: Path) -> tuple[dict[str, list], dict[str, list], int]:
    """Input/output shapes and opset; refuses a graph that still draws random numbers."""
    onnx = _onnx()
    proto = onnx.load(str(path), load_external_data=False)
    ops = {node.op_type for node in _all_nodes(proto)}
    random_ops = sorted(ops & RANDOM_OPS)
    if random_ops:
        raise VerificationError(f"exported graph contains random ops {random_ops}; the NMF bases leaked in")

    def dims(value_info: Any) -> list[Union[int, str]]:
        return [d.dim_param if d.dim_param else int(d.dim_value) for d in value_info.type.tensor_type.shape.dim]

    initializers = {init.name for init in proto.graph.initializer}
    inputs = {v.name: dims(v) for v in proto.graph.input if v.name not in initializers}
    outputs = {v.name: dims(v) for v in proto.graph.output}
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return inputs, outputs, int(opset)


def _all_nodes(proto: Any):
    """Every node, including those in subgraphs (If/Loop bodies) and local functions."""
    stack = [proto.graph] + [fn for fn in proto.functions]
    while stack:
        graph = stack.pop()
        for node in graph.node:
            yield node
            for attr in node.attribute:
                if attr.g is not None and len(attr.g.node):
                    stack.append(attr.g)
                stack.extend(g for g in attr.graphs)


def _session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise BadInputError("checking the export needs 'onnxruntime': pip install onnxruntime "
                            "(or pass check=False / --no-check)") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def reference_run(net: nn.Module, inputs: tuple[Tensor, ...],
                  stored: Optional[Tensor]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``(feeds, PyTorch logits)`` for one check input: the graph's feeds (the image, and the
    bases unless they are stored in the graph) and what PyTorch computes from the same bases."""
    image = inputs[0]
    bases = inputs[1] if stored is None else stored.repeat(image.shape[0], 1, 1)
    with torch.no_grad():
        expected = net(image, bases=bases).numpy()
    feeds = {IMAGE_INPUT: image.numpy()}
    if stored is None:
        feeds[BASES_INPUT] = bases.numpy()
    return feeds, expected


def max_difference(engine: str, got: np.ndarray, expected: np.ndarray) -> float:
    """Largest |engine - PyTorch|, in float64; a shape mismatch is a failed verification."""
    if got.shape != expected.shape:
        raise VerificationError(f"{engine} output shape {got.shape} != PyTorch {expected.shape}")
    return float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))


def _compare(path: Path, net: nn.Module, inputs: tuple[Tensor, ...], stored: Optional[Tensor]) -> float:
    """Largest |onnxruntime - PyTorch| on one input; PyTorch sees exactly the same bases."""
    feeds, expected = reference_run(net, inputs, stored)
    return max_difference("onnxruntime", run_onnx(path, feeds), expected)


def run_onnx(path: PathLike, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Run an exported graph once in onnxruntime (CPU) and return ``logits``."""
    return _session(Path(path)).run([OUTPUT], feeds)[0]
