"""The source-layout registry: one :class:`SourceLayout` per family of SegNeXt key names.

A layout says everything the converter needs to know about a source: its key map, how to
recognise its files, the module tree its tensors are verified in, the NMF rank it defaults
to, whether it can be written back, and which buffers its files lack. The entries are
data (``data/layouts.yaml``); detection, verification, the converter's targets, the hub
registry's layout names and the CLI's choices all read them from here, so adding a layout
touches one key map and one entry. No torch here: the CLI builds its choices from it.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import yaml

from ..errors import BadInputError

#: Module trees a layout's tensors can be verified in (``conversion.verify`` builds them).
REFERENCE_TREES = ("mmseg", "official")
#: The layout every conversion goes through: the reference model's own names.
CANONICAL = "mmseg"
_VARIANT_NAMES = ("t", "s", "b", "l")


@dataclass(frozen=True)
class Clause:
    """One way to recognise a layout: all of ``has`` match some key, none of ``lacks`` any."""

    why: str
    has: tuple[re.Pattern[str], ...]
    lacks: tuple[re.Pattern[str], ...] = ()
    formats: Optional[tuple[str, ...]] = None

    def holds(self, keys: Sequence[str], file_format: str) -> bool:
        if self.formats is not None and file_format not in self.formats:
            return False
        return (all(any(p.search(k) for k in keys) for p in self.has)
                and not any(p.search(k) for p in self.lacks for k in keys))


@dataclass(frozen=True)
class SourceLayout:
    """A family of key names; see the field notes at the top of ``data/layouts.yaml``."""

    name: str
    description: str
    key_map: Union[str, Path]  # a shipped map's name or a YAML file
    names: str
    reference: str
    target: bool
    fills: tuple[str, ...]
    default_md_r: Mapping[str, int]  # variant -> rank
    default_md_r_note: str
    recognise: tuple[Clause, ...]

    def md_r_for(self, variant: str) -> int:
        return self.default_md_r[variant]

    def recognised_by(self, keys: Sequence[str], file_format: str) -> Optional[str]:
        """The reason this layout claims the keys, or None."""
        return next((c.why for c in self.recognise if c.holds(keys, file_format)), None)


def _patterns(entry: Mapping[str, Any], field: str, where: str) -> tuple[re.Pattern[str], ...]:
    values = entry.get(field) or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise BadInputError(f"{where}: '{field}' must be a list of regexes")
    try:
        return tuple(re.compile(v) for v in values)
    except re.error as err:
        raise BadInputError(f"{where}: bad regex in '{field}' ({err})") from None


def parse_layout(entry: Mapping[str, Any], where: str = "layouts.yaml") -> SourceLayout:
    """One entry of ``data/layouts.yaml`` (or a test's own) as a checked SourceLayout."""
    if not isinstance(entry, Mapping):
        raise BadInputError(f"{where}: each layout must be a mapping")
    required = ("name", "description", "key_map", "names", "reference", "target", "default_md_r",
                "default_md_r_note", "recognise")
    missing = [f for f in required if f not in entry]
    unknown = sorted(set(entry) - set(required) - {"fills"})
    if missing or unknown:
        raise BadInputError(f"{where}: layout {entry.get('name')!r}: missing {missing}, unknown {unknown}")
    where = f"{where}: layout {entry['name']!r}"
    if entry["reference"] not in REFERENCE_TREES:
        raise BadInputError(f"{where}: reference must be one of {', '.join(REFERENCE_TREES)}")
    md_r = entry["default_md_r"]
    ranks = dict.fromkeys(_VARIANT_NAMES, md_r) if isinstance(md_r, int) else md_r
    if not isinstance(ranks, Mapping) or set(ranks) != set(_VARIANT_NAMES) or not all(
            type(v) is int and v > 0 for v in ranks.values()):
        raise BadInputError(f"{where}: default_md_r must be a positive int or one per variant (t, s, b, l)")
    clauses = []
    for clause in entry["recognise"] or []:
        formats = clause.get("formats")
        clauses.append(Clause(str(clause.get("why", entry["name"])), _patterns(clause, "has", where),
                              _patterns(clause, "lacks", where), tuple(formats) if formats else None))
    if not clauses or not all(c.has for c in clauses):
        raise BadInputError(f"{where}: needs at least one recognise clause with a 'has' regex")
    return SourceLayout(name=str(entry["name"]), description=str(entry["description"]), key_map=entry["key_map"],
                        names=str(entry["names"]), reference=entry["reference"], target=bool(entry["target"]),
                        fills=tuple(entry.get("fills") or ()), default_md_r=dict(ranks),
                        default_md_r_note=str(entry["default_md_r_note"]), recognise=tuple(clauses))


@functools.lru_cache(maxsize=1)
def _shipped() -> tuple[SourceLayout, ...]:
    text = importlib.resources.files("segnext_hub").joinpath("data/layouts.yaml").read_text(encoding="utf-8")
    return tuple(parse_layout(entry) for entry in yaml.safe_load(text)["layouts"])


_EXTRA: dict[str, SourceLayout] = {}  # registered at run time (tests, plugins), recognised after the shipped


def register_layout(layout: SourceLayout) -> None:
    """Add a layout at run time (recognised after the shipped ones); a shipped name is refused."""
    if any(shipped.name == layout.name for shipped in _shipped()):
        raise BadInputError(f"layout {layout.name!r} is shipped with segnext-hub and cannot be replaced")
    _EXTRA[layout.name] = layout


def unregister_layout(name: str) -> None:
    _EXTRA.pop(name, None)


def all_layouts() -> tuple[SourceLayout, ...]:
    """Every layout, in recognition order."""
    return _shipped() + tuple(_EXTRA.values())


def layout_names(*, targets_only: bool = False) -> tuple[str, ...]:
    return tuple(layout.name for layout in all_layouts() if layout.target or not targets_only)


def get_layout(name: str) -> SourceLayout:
    """The layout called ``name``; an unknown name is one line listing the known ones."""
    for layout in all_layouts():
        if layout.name == name:
            return layout
    raise BadInputError(f"unknown source layout {name!r}; expected one of {', '.join(layout_names())}")


def recognise(keys: Sequence[str], file_format: str) -> tuple[SourceLayout, str]:
    """The first layout whose clauses claim ``keys``, and why; none is one clear line."""
    for layout in all_layouts():
        why = layout.recognised_by(keys, file_format)
        if why is not None:
            return layout, why
    claimed = [layout.name for layout in all_layouts()
               if any(all(any(p.search(k) for k in keys) for p in c.has) for c in layout.recognise)]
    families = sorted({get_layout(n).names for n in claimed})
    if len(families) > 1:
        raise BadInputError(f"checkpoint mixes {' and '.join(families)} key names; no single layout "
                            f"describes it (candidates: {', '.join(claimed)})")
    shown = ", ".join(list(keys)[:3]) + (f" (and {len(keys) - 3} more)" if len(keys) > 3 else "")
    raise BadInputError("not a SegNeXt checkpoint: its keys match no known layout "
                        f"({', '.join(layout_names())}; first keys: {shown})")
