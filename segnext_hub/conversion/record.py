"""The artifact's own record: NMF rank, training seed, classes and palette, with their sources.

SegNeXt outputs depend on two numbers no weight stores: the NMF rank ``MD_R`` of the
LightHamHead (16 for the official T/S configs and every MMSeg 1.x config, the code default
64 for the official B/L configs) and the RNG state the NMF bases are drawn from (the
training seed is the best guess). Only what a run wrote about itself can settle them, so
this module reads that record wherever it survives -- the checkpoint's ``meta`` /
``message_hub`` or the head of a training log -- and says where each value came from.

Everything here works on plain dicts and strings (no torch): checkpoints arrive through a
safe unpickler whose stand-ins for unknown classes must never be trusted, so only plain
``str``/``int``/``list``/``tuple``/``dict`` values are accepted and anything else is
ignored. ``tasks.logs`` reuses these readers, so there is one parser for config text.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Optional, Sequence, Union

from ..errors import BadInputError

PathLike = Union[str, "os.PathLike[str]"]

#: ``MD_R`` both implementations use when ``ham_kwargs`` does not name it.
DEFAULT_MD_R = 64
_MAX_DEPTH = 12  # config dicts are shallow; a deeper structure is not a config


class Found(NamedTuple):
    """A value read from a config, and how it was read (for the user, not for code)."""

    value: int
    note: str


# --------------------------------------------------------------------------- plain values


def _plain_int(value: object) -> Optional[int]:
    """``int`` only: bools, numpy scalars and unpickler stand-ins are not seeds or ranks."""
    return value if type(value) is int else None


def _plain_str(value: object) -> Optional[str]:
    return value if type(value) is str else None


def _get(mapping: object, key: str) -> object:
    """``mapping[key]`` when ``mapping`` is a real dict, else None (never raises)."""
    if not isinstance(mapping, dict):
        return None
    try:
        return mapping.get(key)
    except Exception:  # noqa: BLE001 - a hostile __hash__/__eq__ must not escape
        return None


def _classes(value: object) -> Optional[tuple[str, ...]]:
    if type(value) not in (list, tuple) or not value:
        return None
    names = tuple(_plain_str(v) for v in value)
    return None if any(n is None for n in names) else names  # type: ignore[return-value]


def _palette(value: object) -> Optional[tuple[tuple[int, int, int], ...]]:
    if type(value) not in (list, tuple) or not value:
        return None
    colours = []
    for entry in value:
        if type(entry) not in (list, tuple) or len(entry) != 3:
            return None
        rgb = tuple(_plain_int(c) for c in entry)
        if any(c is None or not 0 <= c <= 255 for c in rgb):  # type: ignore[operator]
            return None
        colours.append(rgb)
    return tuple(colours)  # type: ignore[return-value]


# --------------------------------------------------------------------------- config text / dict

_HAM_KWARGS = re.compile(r"""['"]?\bham_kwargs['"]?\s*[=:]\s*""")
_MD_R_KEY = re.compile(r"""(?<![\w])['"]?md_r['"]?\s*[=:]\s*(\d+)""", re.IGNORECASE)
_SEED_LINE = re.compile(r"^seed\s*=\s*(\d+)\s*$", re.MULTILINE)
_RANDOMNESS = re.compile(r"^randomness\s*=\s*", re.MULTILINE)
_SEED_KEY = re.compile(r"""(?<![\w])['"]?seed['"]?\s*[=:]\s*(\d+)""")
_CLOSE = {"(": ")", "[": "]", "{": "}"}


def _bracket_body(text: str, start: int) -> Optional[str]:
    """The text inside the bracket that opens at or just after ``start`` (``dict(`` or ``{``).

    Quotes are skipped so a ``)`` inside a string cannot end the body early.
    """
    match = re.compile(r"\s*(?:dict\s*)?([({])").match(text, start)
    if not match:
        return None
    stack, quote, i = [_CLOSE[match.group(1)]], None, match.end()
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in _CLOSE:
            stack.append(_CLOSE[ch])
        elif ch in ")]}":
            if ch != stack.pop():
                return None
            if not stack:
                return text[match.end():i]
        i += 1
    return None


_STRING = re.compile(r"""(['"])((?:\\.|(?!\1)[^\\])*)\1""")


def _blank_strings(body: str) -> str:
    """String values emptied, so ``note='MD_R=3'`` cannot pass for a key; a quoted bare
    name stays, since JSON dumps quote their keys (``"MD_R": 16``)."""
    return _STRING.sub(lambda m: m.group(0) if re.fullmatch(r"\w+", m.group(2)) else "''", body)


def _md_r_from_text(text: str) -> Optional[Found]:
    values, defaults = set(), 0
    for match in _HAM_KWARGS.finditer(text):
        body = _bracket_body(text, match.end())
        if body is None:  # ham_kwargs=None, or a truncated dump
            defaults += 1
            continue
        found = {int(v) for v in _MD_R_KEY.findall(_blank_strings(body))}
        if found:
            values |= found
        else:
            defaults += 1
    if len(values) > 1:
        return None  # two heads with different ranks: not ours to pick
    if values:
        value = values.pop()
        return Found(value, f"ham_kwargs MD_R={value}")
    if defaults or "LightHamHead" in text:
        return Found(DEFAULT_MD_R, f"LightHamHead without MD_R: code default {DEFAULT_MD_R}")
    return None


def _walk_dicts(node: object, depth: int = 0, seen: Optional[set] = None) -> Iterable[dict]:
    """Every plain dict in a nested config (lists/tuples descended too), cycle-safe."""
    if depth > _MAX_DEPTH:
        return
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    if isinstance(node, dict):
        seen.add(id(node))
        yield node
        children = list(node.values())
    elif type(node) in (list, tuple):
        seen.add(id(node))
        children = list(node)  # type: ignore[arg-type]
    else:
        return
    for child in children:
        yield from _walk_dicts(child, depth + 1, seen)


def _md_r_from_dict(config: dict) -> Optional[Found]:
    values, segnext = set(), False
    for node in _walk_dicts(config):
        kwargs = _get(node, "ham_kwargs")
        if _get(node, "type") == "LightHamHead" or kwargs is not None:
            segnext = True
        if isinstance(kwargs, dict):
            for key, value in list(kwargs.items()):
                if type(key) is str and key.lower() == "md_r" and _plain_int(value) is not None:
                    values.add(value)
    if len(values) > 1:
        return None
    if values:
        value = values.pop()
        return Found(value, f"ham_kwargs MD_R={value}")
    return Found(DEFAULT_MD_R, f"LightHamHead without MD_R: code default {DEFAULT_MD_R}") if segnext else None


def md_r_from_config(config: object) -> Optional[Found]:
    """The NMF rank a SegNeXt config asks for, or None when the config is not a SegNeXt one.

    Takes config text (mmcv ``meta.config``, MMEngine ``meta.cfg``, a log's config dump,
    or a JSON dump) or a config dict (JSeg saves ``cfg.dump()`` as a nested dict). Reads
    ``MD_R``/``md_r`` inside ``ham_kwargs``; a LightHamHead (or ``ham_kwargs``) without it
    means the code default 64, the official B/L case. Two heads naming different ranks
    give None rather than a guess.
    """
    if isinstance(config, dict):
        return _md_r_from_dict(config)
    text = _plain_str(config)
    return _md_r_from_text(text) if text else None


def seed_from_config(config: object) -> Optional[Found]:
    """The seed a config records: mmcv's ``seed = N`` line or MMEngine's ``randomness``.

    mmcv's ``tools/train.py`` writes the seed it used into the config before dumping it
    into ``meta.config``; MMEngine keeps the requested one in ``randomness = dict(seed=N)``
    (``seed=None`` there means a random seed, so nothing is reported).
    """
    if isinstance(config, dict):
        seed = _plain_int(_get(config, "seed"))
        if seed is not None:
            return Found(seed, f"seed = {seed}")
        seed = _plain_int(_get(_get(config, "randomness"), "seed"))
        return Found(seed, f"randomness = dict(seed={seed})") if seed is not None else None
    text = _plain_str(config)
    if not text:
        return None
    match = _SEED_LINE.search(text)
    if match:
        return Found(int(match.group(1)), f"seed = {match.group(1)}")
    for start in _RANDOMNESS.finditer(text):
        body = _bracket_body(text, start.end())
        key = _SEED_KEY.search(_blank_strings(body)) if body else None
        if key:
            return Found(int(key.group(1)), f"randomness = dict(seed={key.group(1)})")
    return None


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
        for name, value, check in (("md_r", md_r, _plain_int), ("seed", seed, _plain_int),
                                   ("classes", classes, _classes), ("palette", palette, _palette)):
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


class _Picker:
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
        value = _get(container, key)
        if _plain_str(value) or isinstance(value, dict):
            found.append((value, where))
    return found


def read_record(checkpoint: object) -> Record:
    """MD_R, seed, classes and palette from a checkpoint's top-level dict.

    Reads mmcv 1.x ``meta`` (``config`` text, ``seed``, ``CLASSES``, ``PALETTE``), MMEngine
    ``meta`` (``cfg`` text, ``seed``, ``dataset_meta``) and MMEngine's ``message_hub``
    ``runtime_info`` (``cfg``, ``seed``, ``dataset_meta``). Anything missing or of an
    unexpected type is simply not reported: a bare state dict gives an empty Record.
    """
    meta = _get(checkpoint, "meta")
    hub_info = _get(_get(checkpoint, "message_hub"), "runtime_info")
    md_r, seed = _Picker("md_r"), _Picker("seed")
    classes, palette = _Picker("classes"), _Picker("palette")
    configs = _config_candidates(meta, hub_info)
    for config, where in configs:
        found = md_r_from_config(config)
        if found:
            md_r.offer(found.value, where, found.note)
    seed.offer(_plain_int(_get(meta, "seed")), "checkpoint meta.seed")
    seed.offer(_plain_int(_get(hub_info, "seed")), "checkpoint message_hub.runtime_info.seed")
    for config, where in configs:
        found = seed_from_config(config)
        if found:
            seed.offer(found.value, f"{where} ({found.note})")
    for container, where in ((_get(meta, "dataset_meta"), "checkpoint meta.dataset_meta"),
                             (_get(hub_info, "dataset_meta"), "checkpoint message_hub.runtime_info.dataset_meta")):
        classes.offer(_classes(_get(container, "classes")), where)
        palette.offer(_palette(_get(container, "palette")), where)
    classes.offer(_classes(_get(meta, "CLASSES")), "checkpoint meta.CLASSES")
    palette.offer(_palette(_get(meta, "PALETTE")), "checkpoint meta.PALETTE")
    return _build(md_r, seed, classes, palette)


def _build(md_r: _Picker, seed: _Picker, classes: _Picker, palette: _Picker) -> Record:
    return Record(md_r=md_r.value, md_r_source=md_r.source, md_r_note=md_r.note,
                  seed=seed.value, seed_source=seed.source,
                  classes=classes.value, classes_source=classes.source,
                  palette=palette.value, palette_source=palette.source,
                  notes=tuple(md_r.notes + seed.notes + classes.notes + palette.notes))


# --------------------------------------------------------------------------- training logs

# "2023-02-13 16:51:25,072 - mmseg - INFO - " (mmcv) / "2023/02/15 05:04:36 - mmengine - INFO - "
# and the short "06/16 08:23:02 - mmengine - INFO - " MMEngine also writes.
LOG_LINE = re.compile(
    r"^(?:\d{4}[-/])?\d{2}[-/]\d{2} \d{2}:\d{2}:\d{2}(?:,\d+)? - [\w.]+ - "
    r"(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) - ")
_SEED_SET = re.compile(r"Set random seed to (\d+)")
_ENV_SEED = re.compile(r"^\s+seed: (\d+)\s*$")
_VERSION = re.compile(r"^\s*(MMCV|MMSegmentation|MMEngine):\s*(\S+)")
_VERSION_KEYS = {"MMCV": "mmcv", "MMSegmentation": "mmseg", "MMEngine": "mmengine"}
_TRAIN_STARTS = ("Iter [", "Epoch [", "Iter(train)", "Epoch(train)")


@dataclass(frozen=True)
class LogHeader:
    """What a training log says about the run before the first iteration.

    ``configs`` and ``seeds`` keep every copy found with where it was found, so callers
    can both pick one and notice when copies disagree. ``versions`` maps "mmcv",
    "mmseg", "mmengine" to the version strings the log printed.
    """

    configs: tuple[tuple[object, str], ...] = ()
    seeds: tuple[tuple[int, str], ...] = ()
    versions: tuple[tuple[str, str], ...] = ()
    classes: Optional[tuple[str, ...]] = None
    palette: Optional[tuple[tuple[int, int, int], ...]] = None

    def version(self, package: str) -> Optional[str]:
        return dict(self.versions).get(package)


def _versions_in(text: str, found: dict[str, str]) -> None:
    for line in text.splitlines():
        match = _VERSION.match(line)
        if match:
            found.setdefault(_VERSION_KEYS[match.group(1)], match.group(2))


def _is_meta_record(record: dict) -> bool:
    return not any(k in record for k in ("mode", "iter", "step")) and any(
        k in record for k in ("env_info", "seed", "config", "exp_name", "mmseg_version", "mmcv_version"))


def _json_header(lines: Sequence[str]) -> LogHeader:
    configs, seeds, versions = [], [], {}
    classes = palette = None
    for line in lines:
        stripped = line.strip()
        if not stripped.startswith("{") or '"mode"' in stripped or '"step"' in stripped:
            continue
        try:
            record = json.loads(stripped)
        except ValueError:
            continue
        if not isinstance(record, dict) or not _is_meta_record(record):
            continue
        seed = _plain_int(record.get("seed"))
        if seed is not None:
            seeds.append((seed, "training log meta.seed"))
        config = record.get("config")
        if _plain_str(config) or isinstance(config, dict):
            configs.append((config, "training log meta.config"))
        for key in ("mmcv_version", "mmseg_version"):
            if _plain_str(record.get(key)):
                versions.setdefault(key[:-8], record[key])
        if _plain_str(record.get("env_info")):
            _versions_in(record["env_info"], versions)
        classes = classes or _classes(record.get("CLASSES"))
        palette = palette or _palette(record.get("PALETTE"))
    return LogHeader(tuple(configs), tuple(seeds), tuple(sorted(versions.items())), classes, palette)


def _config_dump(lines: Sequence[str], start: int) -> str:
    """The config text printed after a "Config:" log line, up to the next log line."""
    first = lines[start].split("Config:", 1)[1].strip()
    body = [first] if first else []
    for line in lines[start + 1:]:
        if LOG_LINE.match(line):
            break
        body.append(line)
    return "\n".join(body).strip("\n")


def _text_header(lines: Sequence[str]) -> LogHeader:
    configs, seeds, versions = [], [], {}
    in_log_line = False
    for i, line in enumerate(lines):
        head = LOG_LINE.match(line)
        if head:
            in_log_line = True
            message = line[head.end():]
            if message.startswith("Config:"):
                configs.append((_config_dump(lines, i), "training log config dump"))
                in_log_line = False
            seed = _SEED_SET.search(message)
            if seed:
                seeds.append((int(seed.group(1)), "training log 'Set random seed to' line"))
            if message.startswith(_TRAIN_STARTS):
                break  # training started: the header is over
            continue
        if not in_log_line:
            continue
        seed = _ENV_SEED.match(line)
        if seed:
            seeds.append((int(seed.group(1)), "training log environment block"))
        _versions_in(line, versions)
    return LogHeader(tuple(configs), tuple(seeds), tuple(sorted(versions.items())))


def read_log_header(text: str) -> LogHeader:
    """Config text, seeds and versions from the head of a training log of any dialect.

    JSON-lines logs (mmcv's ``.log.json``) keep them in a first record with ``env_info``,
    ``seed`` and ``config``; text logs print an environment block (MMEngine's has
    ``seed: N``), a ``Config:`` dump and mmcv's ``Set random seed to N``. MMEngine's
    ``scalars.json`` has none of it and gives an empty header.
    """
    lines = text.splitlines()
    first = next((line.strip() for line in lines if line.strip()), "")
    return _json_header(lines) if first.startswith("{") else _text_header(lines)


def record_from_header(header: LogHeader) -> Record:
    """A Record from a parsed log header: the first config/seed wins, disagreements noted."""
    md_r, seed = _Picker("md_r"), _Picker("seed")
    classes, palette = _Picker("classes"), _Picker("palette")
    for config, where in header.configs:
        found = md_r_from_config(config)
        if found:
            md_r.offer(found.value, where, found.note)
    for value, where in header.seeds:
        seed.offer(value, where)
    for config, where in header.configs:
        found = seed_from_config(config)
        if found:
            seed.offer(found.value, f"{where} ({found.note})")
    classes.offer(header.classes, "training log meta.CLASSES")
    palette.offer(header.palette, "training log meta.PALETTE")
    return _build(md_r, seed, classes, palette)


def record_from_log(log: Union[PathLike, Any]) -> Record:
    """MD_R and seed (and classes, when logged) from a training log.

    ``log`` is a path, or a summary from ``tasks.logs.parse_log`` (anything with ``md_r``
    and ``seed`` attributes), which is used as is so a log is not read twice.
    """
    if hasattr(log, "md_r") and hasattr(log, "seed"):
        return Record(md_r=_plain_int(log.md_r), md_r_source=getattr(log, "md_r_source", None),
                      md_r_note=getattr(log, "md_r_note", None),
                      seed=_plain_int(log.seed), seed_source=getattr(log, "seed_source", None))
    path = Path(log)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise BadInputError(f"cannot read training log {path}: {err.strerror or err}") from None
    return record_from_header(read_log_header(text))


# --------------------------------------------------------------------------- written by us


def read_metadata_record(metadata: Optional[dict]) -> Record:
    """The record a segnext-hub safetensors header carries (``converter.output_metadata``):
    strings (JSON lists for classes/palette), each source kept inside the new one."""
    if not isinstance(metadata, dict) or metadata.get("architecture") != "segnext":
        return Record()

    def parsed(key: str) -> object:
        try:
            return json.loads(metadata[key]) if _plain_str(metadata.get(key)) else None
        except ValueError:
            return None

    def source(key: str) -> str:
        original = _plain_str(metadata.get(f"{key}_source"))
        return f"safetensors metadata ({original})" if original else "safetensors metadata"

    md_r, seed, classes, palette = (_plain_int(parsed("md_r")), _plain_int(parsed("training_seed")),
                                    _classes(parsed("classes")), _palette(parsed("palette")))
    return Record(md_r=md_r, md_r_source=source("md_r") if md_r is not None else None,
                  seed=seed, seed_source=source("training_seed") if seed is not None else None,
                  classes=classes, classes_source="safetensors metadata" if classes else None,
                  palette=palette, palette_source="safetensors metadata" if palette else None)


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
    pickers = {name: _Picker(name) for name in _FIELDS}
    notes: list[str] = []
    for record in records:
        if record is None:
            continue
        notes.extend(record.notes)
        for name in _FIELDS:
            source = getattr(record, f"{name}_source") or "unnamed source"
            note = record.md_r_note if name == "md_r" else None
            pickers[name].offer(getattr(record, name), source, note)
    merged = _build(pickers["md_r"], pickers["seed"], pickers["classes"], pickers["palette"])
    return Resolution(replace(merged, notes=tuple(notes)), tuple(
        line for name in _FIELDS for line in pickers[name].notes))


def resolve(*, override: Optional[Record] = None, checkpoint: Optional[Record] = None,
            log: Optional[Record] = None, registry: Optional[Record] = None) -> Resolution:
    """Merge by the project's precedence: user override > checkpoint > log > registry.

    The artifact's own record outranks the training log (a log may belong to a sibling
    run) and both outrank the registry, which only knows what a variant usually uses.
    """
    return merge([override, checkpoint, log, registry])
