"""detect -> map -> verify -> write: any SegNeXt checkpoint to verified MMSeg (or official) names."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from .._version import __version__
from ..errors import BadInputError, VerificationError
from ..fileio import check_destination as check_writable
from .detect import Detection, detect
from .keymap import KeyMap, MappingResult, find_state_dict, load_key_map
from .reading import Checkpoint, read_checkpoint
from .verify import (
    VerificationReport,
    build_for_layout,
    check_keys,
    compare_models,
    load_into,
)
from .writing import write_pth, write_safetensors

TARGETS = ("mmseg", "official")
OUTPUT_SUFFIXES = (".safetensors", ".pth", ".pt")


@dataclass
class ConvertReport:
    """What a conversion found, did and proved; printable as text or JSON."""

    source: str
    source_format: str
    source_sha256: str
    detection: dict[str, Any]
    target_layout: str
    key_map: str
    container: Optional[str]
    keys_in: int
    keys_out: int
    renamed: int
    dropped: list[tuple[str, str]] = field(default_factory=list)
    added: int = 0
    stripped_prefixes: dict[str, int] = field(default_factory=dict)
    verification: Optional[dict[str, Any]] = None
    output: Optional[str] = None
    output_sha256: Optional[str] = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format_text(self) -> str:
        det = self.detection
        lines = [
            f"source      {self.source} ({self.source_format}, sha256 {self.source_sha256[:12]})",
            f"detected    {det['layout']} {det['kind']}, SegNeXt-{det['variant'].upper()}"
            + (f", {det['num_classes']} classes ({det['dataset'] or 'unknown dataset'}), md_r {det['md_r']}"
               if det["kind"] == "segmentor" else ""),
        ]
        for name, how in det["sources"].items():
            lines.append(f"  {name:<11} {how}")
        lines.append(f"keys        {self.keys_in} in, {self.keys_out} out: {self.renamed} renamed, "
                     f"{len(self.dropped)} dropped, {self.added} added (key map '{self.key_map}')")
        for prefix, count in self.stripped_prefixes.items():
            lines.append(f"  stripped '{prefix}' from {count} keys")
        for key, why in self.dropped[:5]:
            lines.append(f"  dropped {key}: {why}")
        if len(self.dropped) > 5:
            lines.append(f"  ... and {len(self.dropped) - 5} more dropped")
        ver = self.verification
        if ver is None:
            lines.append("verify      skipped (--no-verify)")
        else:
            state = "OK" if ver["verified"] else "FAILED"
            lines.append(f"verify      {state}: max abs diff {ver['max_abs_diff']:.3g} (atol {ver['atol']:g}) "
                         f"over {len(ver['per_output'])} outputs at sizes "
                         + ", ".join(f"{s[2]}x{s[3]}" for s in ver["inputs"]))
        if self.output:
            lines.append(f"wrote       {self.output} (sha256 {self.output_sha256})")
        lines.append(f"time        {self.seconds:.2f} s")
        return "\n".join(lines)


@dataclass
class Conversion:
    """The in-memory result: tensors in the target layout, plus the report."""

    tensors: dict[str, torch.Tensor]
    detection: Detection
    report: ConvertReport
    container: Any


def _normalise(state: dict[str, torch.Tensor], key_map: KeyMap) -> MappingResult:
    """Only the strip/drop rules: the source keys as the source model names them."""
    subset = KeyMap(key_map.name, "", key_map.unwrap,
                    tuple(r for r in key_map.rules if r.kind in ("strip_prefix", "drop")))
    return subset.apply(state)


def convert_checkpoint(
    checkpoint: Checkpoint,
    *,
    from_layout: str = "auto",
    to: str = "mmseg",
    variant: Optional[str] = None,
    num_classes: Optional[int] = None,
    md_r: Optional[int] = None,
    md_r_source: Optional[str] = None,
    verify: bool = True,
    atol: float = 0.0,
) -> Conversion:
    """Map and verify a checkpoint already read; raises BadInputError / VerificationError."""
    started = time.perf_counter()
    if to not in TARGETS:
        raise BadInputError(f"unknown target layout {to!r}; expected one of {', '.join(TARGETS)}")
    if atol < 0 or atol != atol:
        raise BadInputError(f"--atol must be a non-negative number, got {atol}")
    probe_map = load_key_map("mmseg")  # containers and DDP prefixes are the same for every map
    state, container_key = find_state_dict(checkpoint.obj, probe_map.unwrap)
    normalised = _normalise(state, probe_map).tensors
    det = detect(normalised, file_format=checkpoint.format, container=checkpoint.obj,
                 layout=from_layout, variant=variant, num_classes=num_classes, md_r=md_r,
                 md_r_source=md_r_source)
    key_map = load_key_map(det.layout)
    forward = key_map.apply(state)
    source_named = _normalise(state, key_map).tensors

    # Check against the reference model's keys and shapes before anything heavier.
    reference = build_for_layout("mmseg", det)
    check_keys(forward.tensors, reference.state_dict())
    tensors, map_name, result = forward.tensors, key_map.name, forward
    if to == "official":
        back = load_key_map("official").inverted().apply(forward.tensors)
        tensors, map_name = back.tensors, f"{key_map.name}+official-reverse"
        result = _merge(forward, back)

    report = ConvertReport(
        source=str(checkpoint.path), source_format=checkpoint.format, source_sha256=checkpoint.sha256,
        detection=det.to_dict(), target_layout=to, key_map=map_name, container=container_key,
        keys_in=len(state), keys_out=len(tensors), renamed=len(result.renamed),
        dropped=result.dropped, added=len(result.added), stripped_prefixes=result.stripped_prefixes,
    )
    if verify:
        source_model = load_into(build_for_layout(det.layout, det), source_named, det.layout)
        # The empty reference model built for the key check is the mmseg target itself.
        target_model = load_into(reference if to == "mmseg" else build_for_layout(to, det), tensors, to)
        outcome: VerificationReport = compare_models(source_model, target_model, det.kind, atol)
        report.verification = outcome.to_dict()
        if not outcome.verified:
            worst = max(outcome.per_output, key=outcome.per_output.get)
            raise VerificationError(
                f"verification failed: {worst} differs by {outcome.max_abs_diff:.3g} (atol {atol:g}); "
                "nothing written")
    report.seconds = time.perf_counter() - started
    return Conversion(tensors, det, report, checkpoint.obj)


def _merge(first: MappingResult, second: MappingResult) -> MappingResult:
    merged = MappingResult(tensors=second.tensors)
    merged.renamed = first.renamed + second.renamed
    merged.dropped = first.dropped + second.dropped
    merged.added = first.added + second.added
    merged.stripped_prefixes = dict(first.stripped_prefixes)
    return merged


def output_metadata(conv: Conversion, tool_version: str = __version__) -> dict[str, str]:
    """String metadata stored in the safetensors header (and the .pth meta)."""
    det, rep = conv.detection, conv.report
    meta = {
        "format": "pt",
        "segnext_hub_version": tool_version,
        "architecture": "segnext",
        "variant": det.variant,
        "kind": det.kind,
        "layout": rep.target_layout,
        "source_layout": det.layout,
        "source_sha256": rep.source_sha256,
        "source_file": Path(rep.source).name,
        "key_map": rep.key_map,
        "verification": json.dumps(rep.verification) if rep.verification else "skipped",
    }
    if det.kind == "segmentor":
        meta.update(num_classes=str(det.num_classes), md_r=str(det.md_r),
                    md_r_source=det.sources.get("md_r", ""), dataset=det.dataset or "unknown")
    return meta


def write_output(conv: Conversion, dst: Union[str, Path], *, force: bool = False) -> str:
    """Write the converted tensors; the format follows the suffix. Returns the sha256."""
    dst = Path(dst)
    metadata = output_metadata(conv)
    if dst.suffix == ".safetensors":
        return write_safetensors(dst, conv.tensors, metadata, force=force)
    meta: dict[str, Any] = {"segnext_hub": metadata}
    if conv.detection.kind == "segmentor":
        meta["dataset_meta"] = _dataset_meta(conv.detection.dataset, conv.detection.num_classes or 0)
    return write_pth(dst, {"meta": meta, "state_dict": conv.tensors}, force=force)


def _dataset_meta(dataset: Optional[str], num_classes: int) -> dict[str, list]:
    """Classes and palette for MMSeg's ``init_model`` (it reads them unguarded)."""
    from ..datasets import get_dataset, guess_dataset, palette_for

    info = get_dataset(dataset) if dataset else guess_dataset(num_classes)
    if info is not None and info.num_classes == num_classes:
        return {"classes": list(info.classes), "palette": [list(c) for c in info.palette]}
    return {"classes": [f"class_{i}" for i in range(num_classes)],
            "palette": palette_for(num_classes).tolist()}


def check_destination(dst: Union[str, Path], force: bool) -> Path:
    dst = Path(dst)
    if dst.suffix not in OUTPUT_SUFFIXES:
        raise BadInputError(f"output {dst} must end in .safetensors, .pth or .pt")
    return check_writable(dst, force=force)


def convert(
    src: Union[str, Path],
    dst: Union[str, Path],
    *,
    from_layout: str = "auto",
    to: str = "mmseg",
    variant: Optional[str] = None,
    num_classes: Optional[int] = None,
    md_r: Optional[int] = None,
    verify: bool = True,
    atol: float = 0.0,
    force: bool = False,
) -> ConvertReport:
    """Convert ``src`` into ``dst`` (.safetensors or .pth) and return the report.

    Nothing is written unless every key is accounted for and, with ``verify``, the
    outputs match within ``atol`` (default: exact). An existing ``dst`` is kept unless
    ``force``.
    """
    started = time.perf_counter()
    dst = check_destination(dst, force)
    checkpoint = read_checkpoint(src)
    conv = convert_checkpoint(checkpoint, from_layout=from_layout, to=to, variant=variant,
                              num_classes=num_classes, md_r=md_r, verify=verify, atol=atol)
    conv.report.output_sha256 = write_output(conv, dst, force=force)
    conv.report.output = str(dst)
    conv.report.seconds = time.perf_counter() - started
    return conv.report
