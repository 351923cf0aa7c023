"""detect -> map -> verify -> write: any SegNeXt checkpoint to verified MMSeg (or official) names."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..config import ArtifactConfig
from ..datasets import label_space, own_label_space
from ..errors import BadInputError, VerificationError
from ..fileio import check_destination as check_writable
from ..fileio import require_free_space
from ..models.variants import check_md_r, get_variant
from .detect import Detection, choose_layout, detect
from .keymap import KeyMap, MappingResult, find_state_dict, load_key_map
from .layouts import CANONICAL, get_layout, layout_names
from .paddle import write_pdparams
from .reading import Checkpoint, read_checkpoint
from .log_header import record_from_log
from .record import (
    Record,
    Resolution,
    by_precedence,
    described_md_r_source,
    merge,
    read_metadata_record,
    read_record,
)
from .verify import (
    VerificationReport,
    build_for_layout,
    check_keys,
    compare_models,
    load_into,
)
from .writing import write_pth, write_safetensors

OUTPUT_SUFFIXES = (".safetensors", ".pth", ".pt", ".pdparams")


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
    reshaped: int = 0
    stripped_prefixes: dict[str, int] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)  # md_r/training_seed/classes with sources
    disagreements: list[str] = field(default_factory=list)  # sources that recorded other values
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
            + (f", {det['num_classes']} classes ({det['dataset'] or 'unknown dataset'}), md_r {det['md_r']}, "
               f"head {det['ham_channels']} wide" if det["kind"] == "segmentor" else ""),
        ]
        for name, how in det["sources"].items():
            lines.append(f"  {name:<11} {how}")
        rec = self.record
        if rec.get("training_seed") is not None:
            lines.append(f"  {'seed':<11} {rec['training_seed']} ({rec['training_seed_source']})")
        if rec.get("classes_source"):
            lines.append(f"  {'classes':<11} {len(rec['classes'])} recorded names ({rec['classes_source']})")
        for line in self.disagreements:
            lines.append(f"warning     {line}")
        lines.append(f"keys        {self.keys_in} in, {self.keys_out} out: {self.renamed} renamed, "
                     f"{len(self.dropped)} dropped, {self.added} added"
                     + (f", {self.reshaped} reshaped" if self.reshaped else "") + f" (key map '{self.key_map}')")
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
    resolution: Resolution = field(default_factory=lambda: Resolution(Record(), ()))

    @property
    def record(self) -> Record:
        """The merged record: MD_R as the model uses it, training seed, own classes/palette."""
        return self.resolution.record

    def artifact_config(self, name: Optional[str] = None) -> ArtifactConfig:
        """What the converted weights are, with the record's values and their sources."""
        det, rec = self.detection, self.report.record
        segmentor = det.kind == "segmentor"
        return ArtifactConfig(
            variant=det.variant, kind=det.kind, name=name, num_classes=det.num_classes,
            md_r=det.md_r, md_r_source=det.sources.get("md_r") if segmentor else None,
            ham_channels=det.ham_channels if segmentor else None,
            dataset=det.dataset, source_layout=det.layout,
            training_seed=rec.get("training_seed"), training_seed_source=rec.get("training_seed_source"),
            classes=rec.get("classes") if segmentor else None, classes_source=rec.get("classes_source"),
            palette=rec.get("palette") if segmentor else None, palette_source=rec.get("palette_source"))


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
    seed: Optional[int] = None,
    log: Optional[Record] = None,
    registry: Optional[Record] = None,
    verify: bool = True,
    atol: float = 0.0,
) -> Conversion:
    """Map and verify a checkpoint already read; raises BadInputError / VerificationError.

    MD_R, the training seed, classes and palette come from the artifact's own record
    (:func:`artifact_record`), then ``log`` (a training log's record), then ``registry``;
    ``md_r``/``seed`` are the user's overrides and beat them all (``md_r_source`` names
    who gave them). Without any record, detection falls back to the layout's default MD_R.
    """
    started = time.perf_counter()
    targets = layout_names(targets_only=True)
    if to not in targets:
        raise BadInputError(f"unknown target layout {to!r}; expected one of {', '.join(targets)}")
    if atol < 0 or atol != atol:
        raise BadInputError(f"--atol must be a non-negative number, got {atol}")
    probe_map = load_key_map(CANONICAL)  # containers and DDP prefixes are the same for every map
    state, container_key = find_state_dict(checkpoint.obj, probe_map.unwrap)
    layout, layout_source = choose_layout(list(_normalise(state, probe_map).tensors), checkpoint.format,
                                          from_layout)
    key_map = load_key_map(layout.key_map)
    forward = key_map.apply(state)
    override = (Record.of(md_r_source or "user override", md_r=md_r, seed=seed)
                if md_r is not None or seed is not None else None)
    resolution = by_precedence(override=override, checkpoint=artifact_record(checkpoint), log=log, registry=registry)
    det = detect(forward.tensors, layout=layout, layout_source=layout_source, variant=variant,
                 num_classes=num_classes, md_r=resolution.record.md_r,
                 md_r_source=described_md_r_source(resolution.record))
    if det.kind == "segmentor" and det.md_r is not None:
        try:  # a rank from a file (meta.config, a log) drives memory: bounded by the head, named
            check_md_r(det.md_r, det.ham_channels or get_variant(det.variant).ham_channels)
        except ValueError as err:
            raise BadInputError(f"{checkpoint.path}: {err} (read from {det.sources.get('md_r')})") from None

    # Check against the reference model's keys and shapes before anything heavier.
    reference = build_for_layout(CANONICAL, det)
    check_keys(forward.tensors, reference.state_dict())
    tensors, map_name, result = forward.tensors, key_map.name, forward
    if to != CANONICAL:
        inverse = load_key_map(get_layout(to).key_map).inverted()
        back = inverse.apply(forward.tensors)
        tensors, map_name = back.tensors, f"{key_map.name}+{inverse.name}"
        result = _merge(forward, back)

    report = ConvertReport(
        source=str(checkpoint.path), source_format=checkpoint.format, source_sha256=checkpoint.sha256,
        detection=det.to_dict(), target_layout=to, key_map=map_name, container=container_key,
        keys_in=len(state), keys_out=len(tensors), renamed=len(result.renamed),
        dropped=result.dropped, added=len(result.added), reshaped=len(result.reshaped), stripped_prefixes=result.stripped_prefixes,
        record=record_summary(resolution.record, det), disagreements=list(resolution.disagreements),
    )
    if verify:
        # Each side in the module tree its layout is verified in, under that tree's names.
        source_named = _normalise(state, key_map).tensors if layout.names == layout.reference else forward.tensors
        source_model = load_into(build_for_layout(layout.name, det), source_named, layout.name)
        target = get_layout(to)
        target_named = tensors if target.names == target.reference else forward.tensors
        # The empty reference model built for the key check is the mmseg target itself.
        target_model = load_into(reference if to == CANONICAL else build_for_layout(to, det), target_named, to)
        outcome: VerificationReport = compare_models(source_model, target_model, det.kind, atol)
        report.verification = outcome.to_dict()
        if not outcome.verified:
            worst = max(outcome.per_output, key=outcome.per_output.get)
            raise VerificationError(
                f"verification failed: {worst} differs by {outcome.max_abs_diff:.3g} (atol {atol:g}); "
                "nothing written")
    report.seconds = time.perf_counter() - started
    return Conversion(tensors, det, report, checkpoint.obj, resolution)


def artifact_record(checkpoint: Checkpoint) -> Record:
    """What the file says about itself: its ``meta``/``message_hub`` (mmcv, MMEngine), or
    the header of a safetensors that segnext-hub wrote."""
    return merge([read_record(checkpoint.obj), read_metadata_record(checkpoint.metadata)]).record


def record_summary(record: Record, det: Detection) -> dict[str, Any]:
    """The record as config.json, the manifest and the report name it."""
    classes, palette = own_label_space(det.num_classes, det.dataset, record.classes, record.palette)
    return {"md_r": det.md_r, "md_r_source": det.sources.get("md_r"),
            "training_seed": record.seed, "training_seed_source": record.seed_source,
            "classes": classes, "classes_source": record.classes_source if classes else None,
            "palette": palette, "palette_source": record.palette_source if palette else None}


def _merge(first: MappingResult, second: MappingResult) -> MappingResult:
    merged = MappingResult(tensors=second.tensors)
    merged.renamed = first.renamed + second.renamed
    merged.dropped = first.dropped + second.dropped
    merged.added = first.added + second.added
    merged.reshaped = first.reshaped + second.reshaped
    merged.stripped_prefixes = dict(first.stripped_prefixes)
    return merged


def output_metadata(conv: Conversion) -> dict[str, str]:
    """String metadata stored in the safetensors header (and the .pth meta): the artifact's
    config, then what the conversion did (target layout, source file and hash, key map,
    verification)."""
    rep = conv.report
    meta = conv.artifact_config(Path(rep.source).stem).to_metadata()
    meta.update(layout=rep.target_layout, source_sha256=rep.source_sha256, source_file=Path(rep.source).name,
                key_map=rep.key_map,
                verification=json.dumps(rep.verification) if rep.verification else "skipped")
    note = head_width_note(conv.detection.variant, conv.detection.ham_channels)
    if note:
        meta["ham_channels_note"] = note
    return meta


def head_width_note(variant: str, ham_channels: Optional[int]) -> Optional[str]:
    """What a user of MMSeg's configs must know about a head of another width (else None)."""
    default = get_variant(variant).ham_channels
    if ham_channels is None or ham_channels == default:
        return None
    return (f"decode head {ham_channels} wide (channels = ham_channels = {ham_channels}); MMSeg's stock "
            f"SegNeXt-{variant.upper()} config builds {default}, so it will not load these weights as it is: "
            f"set decode_head channels and ham_channels to {ham_channels}")


def write_output(conv: Conversion, dst: Union[str, Path], *, force: bool = False) -> str:
    """Write the converted tensors; the format follows the suffix. Returns the sha256."""
    dst = Path(dst)
    metadata = output_metadata(conv)
    if dst.suffix == ".pdparams":
        if conv.report.target_layout != "paddle":
            raise BadInputError(f"{dst.name}: a .pdparams output holds Paddle names; add --to paddle")
        return write_pdparams(dst, conv.tensors, force=force)
    if dst.suffix == ".safetensors":
        return write_safetensors(dst, conv.tensors, metadata, force=force)
    meta: dict[str, Any] = {"segnext_hub": metadata}
    if conv.detection.kind == "segmentor":
        meta["dataset_meta"] = _dataset_meta(conv)
    return write_pth(dst, {"meta": meta, "state_dict": conv.tensors}, force=force)


def _dataset_meta(conv: Conversion) -> dict[str, list]:
    """Classes and palette for MMSeg's ``init_model`` (it reads them unguarded): the
    checkpoint's own, else the dataset's."""
    det, rec = conv.detection, conv.record
    space = label_space(det.num_classes or 0, det.dataset, rec.classes, rec.palette)
    return {"classes": list(space.classes), "palette": [list(c) for c in space.palette]}


def check_destination(dst: Union[str, Path], force: bool) -> Path:
    dst = Path(dst)
    if dst.suffix not in OUTPUT_SUFFIXES:
        raise BadInputError(f"output {dst} must end in .safetensors, .pth, .pt or .pdparams (with --to paddle)")
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
    seed: Optional[int] = None,
    log: Optional[Union[str, Path]] = None,
    verify: bool = True,
    atol: float = 0.0,
    force: bool = False,
) -> ConvertReport:
    """Convert ``src`` into ``dst`` (.safetensors or .pth) and return the report.

    Nothing is written unless every key is accounted for and, with ``verify``, the source
    (in its own module tree) and the converted model agree on fixed inputs within ``atol``:
    a conversion that changes what the model computes never reaches the disk.

    Args:
        src: A checkpoint in any layout read here (official, MMSeg, Jittor; ``.pth``,
            ``.pkl``, ``.safetensors``); never unpickled with code execution.
        dst: The output; its suffix picks the format (``.safetensors``, or ``.pth``/``.pt``
            as an MMSeg-loadable checkpoint).
        from_layout: The source layout, or ``"auto"`` to detect it from the key names.
        to: The target layout's key names (``"mmseg"``, or ``"official"``).
        variant: Overrides the detected variant.
        num_classes: Overrides the detected class count.
        md_r: Overrides every recorded NMF rank.
        seed: Overrides every recorded training seed.
        log: The run's training log, read for MD_R and seed where the checkpoint does not
            record them.
        verify: Compare outputs before writing (default: yes).
        atol: Largest accepted absolute difference (default: exactly equal).
        force: Replace an existing ``dst``.

    Returns:
        A ``ConvertReport``: what was detected and where each value came from, the key
        counts, the verification, the output's sha256 (``to_dict()``, ``format_text()``).

    Raises:
        BadInputError: Unreadable or foreign ``src``, unknown keys, an existing ``dst``
            without ``force``, a bad option.
        VerificationError: The outputs differ beyond ``atol`` (nothing is written).
    """
    started = time.perf_counter()
    dst = check_destination(dst, force)
    if dst.suffix == ".pdparams" and to != "paddle":
        raise BadInputError(f"{dst.name}: a .pdparams output holds Paddle names; add --to paddle")
    log_record = record_from_log(log) if log is not None else None
    checkpoint = read_checkpoint(src)
    # Before the (long) verification, not after it: the output holds these tensors again.
    state, _ = find_state_dict(checkpoint.obj, load_key_map(CANONICAL).unwrap)
    require_free_space(dst.parent, sum(t.numel() * t.element_size() for t in state.values()
                                       if isinstance(t, torch.Tensor)), dst)
    conv = convert_checkpoint(checkpoint, from_layout=from_layout, to=to, variant=variant,
                              num_classes=num_classes, md_r=md_r, seed=seed, log=log_record,
                              verify=verify, atol=atol)
    conv.report.output_sha256 = write_output(conv, dst, force=force)
    conv.report.output = str(dst)
    conv.report.seconds = time.perf_counter() - started
    return conv.report
