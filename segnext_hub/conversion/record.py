"""The artifact's own record: NMF rank, training seed, classes and palette, with their sources.

SegNeXt outputs depend on two numbers no weight stores: the NMF rank ``MD_R`` of the
LightHamHead (16 for the official T/S configs and every MMSeg 1.x config, the code default
64 for the official B/L configs) and the RNG state the NMF bases are drawn from (the
training seed is the best guess). Only what a run wrote about itself can settle them, so
this module reads that record wherever it survives -- the checkpoint's ``meta`` /
``message_hub`` or our own safetensors metadata (training logs: ``log_header``) -- says
where each value came from, and merges several records by precedence.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Optional, Sequence

from ..config import ArtifactConfig
from ..errors import BadInputError
from .config_text import md_r_from_config, plain_classes, plain_get, plain_int, plain_palette, plain_str, seed_from_config

# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class Record:
    """What an artifact says about itself; every value travels with where it was read.

    ``notes`` holds one-line disagreements found inside this one source (say the meta
    seed and the config's seed differ); disagreements between sources come from
    :func:`merge` / :func:`resolve`.
    """

    md_r: Optional[int] = None
    md_r_source: Optional[str] = None
    md_r_note: Optional[str] = None  # "ham_kwargs MD_R=16" / "...code default 64"
    seed: Optional[int] = None
    seed_source: Optional[str] = None
    classes: Optional[tuple[str, ...]] = None
    classes_source: Optional[str] = None
    palette: Optional[tuple[tuple[int, int, int], ...]] = None
    palette_source: Optional[str] = None
    notes: tuple[str, ...] = ()

    @classmethod
    def of(cls, source: str, *, md_r: Optional[int] = None, seed: Optional[int] = None,
           classes: Optional[Sequence[str]] = None,
           palette: Optional[Sequence[Sequence[int]]] = None) -> "Record":
        """A record whose every given value comes from one ``source`` ("user override",
        "registry"...). Values that are not plain ints/strings are rejected, not coerced."""
        values: dict[str, Any] = {}
        for name, value, check in (("md_r", md_r, plain_int), ("seed", seed, plain_int),
                                   ("classes", classes, plain_classes), ("palette", palette, plain_palette)):
            if value is None:
                continue
            if check(value) is None:
                raise BadInputError(f"{source}: {name} {value!r} is not usable")
            values[name], values[f"{name}_source"] = check(value), source
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view (tuples become lists)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("classes", "notes"):
            data[key] = list(data[key]) if data[key] is not None else None
        data["palette"] = [list(c) for c in self.palette] if self.palette else None
        return data


class Picker:
    """Collects candidate values for one field in precedence order; first usable wins."""

    def __init__(self, name: str) -> None:
        self.name, self.value, self.source, self.note, self.notes = name, None, None, None, []

    def offer(self, value: Any, source: str, note: Optional[str] = None) -> None:
        if value is None:
            return
        if self.value is None:
            self.value, self.source, self.note = value, source, note
        elif value != self.value:
            self.notes.append(f"{self.name}: {source} says {_show(value)}, {self.source} says "
                              f"{_show(self.value)}; using {_show(self.value)} ({self.source})")


def _show(value: Any) -> str:
    if isinstance(value, tuple) and value and isinstance(value[0], str):
        head = ", ".join(value[:3]) + (", ..." if len(value) > 3 else "")
        return f"{len(value)} classes ({head})"
    if isinstance(value, tuple) and value:
        return f"{len(value)} colours"
    return str(value)


def _config_candidates(meta: object, hub_info: object) -> list[tuple[object, str]]:
    found = []
    for container, key, where in ((meta, "config", "checkpoint meta.config"),
                                  (meta, "cfg", "checkpoint meta.cfg"),
                                  (hub_info, "cfg", "checkpoint message_hub.runtime_info.cfg")):
        value = plain_get(container, key)
        if plain_str(value) or isinstance(value, dict):
            found.append((value, where))
    return found


def read_record(checkpoint: object) -> Record:
    """MD_R, seed, classes and palette from a checkpoint's top-level dict.

    Reads mmcv 1.x ``meta`` (``config`` text, ``seed``, ``CLASSES``, ``PALETTE``), MMEngine
    ``meta`` (``cfg`` text, ``seed``, ``dataset_meta``) and MMEngine's ``message_hub``
    ``runtime_info`` (``cfg``, ``seed``, ``dataset_meta``). Anything missing or of an
    unexpected type is simply not reported: a bare state dict gives an empty Record.
    """
    meta = plain_get(checkpoint, "meta")
    hub_info = plain_get(plain_get(checkpoint, "message_hub"), "runtime_info")
    md_r, seed = Picker("md_r"), Picker("seed")
    classes, palette = Picker("classes"), Picker("palette")
    configs = _config_candidates(meta, hub_info)
    for config, where in configs:
        found = md_r_from_config(config)
        if found:
            md_r.offer(found.value, where, found.note)
    seed.offer(plain_int(plain_get(meta, "seed")), "checkpoint meta.seed")
    seed.offer(plain_int(plain_get(hub_info, "seed")), "checkpoint message_hub.runtime_info.seed")
    for config, where in configs:
        found = seed_from_config(config)
        if found:
            seed.offer(found.value, f"{where} ({found.note})")
    for container, where in ((plain_get(meta, "dataset_meta"), "checkpoint meta.dataset_meta"),
                             (plain_get(hub_info, "dataset_meta"), "checkpoint message_hub.runtime_info.dataset_meta")):
        classes.offer(plain_classes(plain_get(container, "classes")), where)
        palette.offer(plain_palette(plain_get(container, "palette")), where)
    classes.offer(plain_classes(plain_get(meta, "CLASSES")), "checkpoint meta.CLASSES")
    palette.offer(plain_palette(plain_get(meta, "PALETTE")), "checkpoint meta.PALETTE")
    return build_record(md_r, seed, classes, palette)


def build_record(md_r: Picker, seed: Picker, classes: Picker, palette: Picker) -> Record:
    return Record(md_r=md_r.value, md_r_source=md_r.source, md_r_note=md_r.note,
                  seed=seed.value, seed_source=seed.source,
                  classes=classes.value, classes_source=classes.source,
                  palette=palette.value, palette_source=palette.source,
                  notes=tuple(md_r.notes + seed.notes + classes.notes + palette.notes))


# --------------------------------------------------------------------------- written by us


def read_metadata_record(metadata: Optional[dict]) -> Record:
    """The record a segnext-hub safetensors header carries (``ArtifactConfig.to_metadata``),
    each source kept inside the new one; any other header gives an empty Record.

    Raises:
        BadInputError: a segnext-hub header holding a value out of range.
    """
    config = ArtifactConfig.from_metadata(metadata) if isinstance(metadata, dict) else None
    if config is None or config.is_backbone:
        return Record()

    def source(original: Optional[str]) -> str:
        return f"safetensors metadata ({original})" if original else "safetensors metadata"

    seed = config.training_seed
    return Record(md_r=config.md_r, md_r_source=source(config.md_r_source) if config.md_r is not None else None,
                  seed=seed, seed_source=source(config.training_seed_source) if seed is not None else None,
                  classes=config.classes, classes_source="safetensors metadata" if config.classes else None,
                  palette=config.palette, palette_source="safetensors metadata" if config.palette else None)


def described_md_r_source(record: Record) -> Optional[str]:
    """"checkpoint meta.config (ham_kwargs MD_R=16)": where MD_R was read and what it said."""
    if record.md_r_source and record.md_r_note and record.md_r_note not in record.md_r_source:
        return f"{record.md_r_source} ({record.md_r_note})"
    return record.md_r_source


# --------------------------------------------------------------------------- precedence


@dataclass(frozen=True)
class Resolution:
    """The merged record and the one-line disagreements between the sources."""

    record: Record
    disagreements: tuple[str, ...]


_FIELDS = ("md_r", "seed", "classes", "palette")


def merge(records: Sequence[Optional[Record]]) -> Resolution:
    """Pick each value from the first record (in the given order) that has it.

    Every later source with a different value adds one line to ``disagreements``, e.g.
    "md_r: training log config dump says 64, checkpoint meta.config says 16; using 16
    (checkpoint meta.config)". Notes a record already carries are kept.
    """
    pickers = {name: Picker(name) for name in _FIELDS}
    notes: list[str] = []
    for record in records:
        if record is None:
            continue
        notes.extend(record.notes)
        for name in _FIELDS:
            source = getattr(record, f"{name}_source") or "unnamed source"
            note = record.md_r_note if name == "md_r" else None
            pickers[name].offer(getattr(record, name), source, note)
    merged = build_record(pickers["md_r"], pickers["seed"], pickers["classes"], pickers["palette"])
    return Resolution(replace(merged, notes=tuple(notes)), tuple(
        line for name in _FIELDS for line in pickers[name].notes))


def by_precedence(*, override: Optional[Record] = None, checkpoint: Optional[Record] = None,
            log: Optional[Record] = None, registry: Optional[Record] = None) -> Resolution:
    """Merge by the project's precedence: user override > checkpoint > log > registry.

    The artifact's own record outranks the training log (a log may belong to a sibling
    run) and both outrank the registry, which only knows what a variant usually uses.
    """
    return merge([override, checkpoint, log, registry])
