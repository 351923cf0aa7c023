"""Reading SegNeXt config text and config dicts: the NMF rank and the seed a run asked for.

The config a run dumped (mmcv ``meta.config``, MMEngine ``meta.cfg``, a log's ``Config:``
dump, a JSON dump, JSeg's nested dict) is the only place ``MD_R`` and the seed survive.
Everything here works on plain values (no torch): checkpoints arrive through a safe
unpickler whose stand-ins for unknown classes must never be trusted, so only plain
``str``/``int``/``list``/``tuple``/``dict`` values are accepted and anything else is
ignored. Text is scanned in time linear in its length, whatever it holds: it comes from
files and servers nobody vetted.
"""

from __future__ import annotations

import itertools
import re
from typing import Iterable, NamedTuple, Optional

DEFAULT_MD_R = 64
_MAX_DEPTH = 12  # config dicts are shallow; a deeper structure is not a config


class Found(NamedTuple):
    """A value read from a config, and how it was read (for the user, not for code)."""

    value: int
    note: str


# --------------------------------------------------------------------------- plain values


def plain_int(value: object) -> Optional[int]:
    """``int`` only: bools, numpy scalars and unpickler stand-ins are not seeds or ranks."""
    return value if type(value) is int else None


def plain_str(value: object) -> Optional[str]:
    return value if type(value) is str else None


def plain_get(mapping: object, key: str) -> object:
    """``mapping[key]`` when ``mapping`` is a real dict, else None (never raises)."""
    if not isinstance(mapping, dict):
        return None
    try:
        return mapping.get(key)
    except Exception:  # noqa: BLE001 - a hostile __hash__/__eq__ must not escape
        return None


def plain_classes(value: object) -> Optional[tuple[str, ...]]:
    if type(value) not in (list, tuple) or not value:
        return None
    names = tuple(plain_str(v) for v in value)
    return None if any(n is None for n in names) else names  # type: ignore[return-value]


def plain_palette(value: object) -> Optional[tuple[tuple[int, int, int], ...]]:
    if type(value) not in (list, tuple) or not value:
        return None
    colours = []
    for entry in value:
        if type(entry) not in (list, tuple) or len(entry) != 3:
            return None
        rgb = tuple(plain_int(c) for c in entry)
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


#: No real ``ham_kwargs``/``randomness`` dict is longer than a few hundred characters; a
#: scan stops after this many, so crafted text (thousands of unclosed ``ham_kwargs=(``)
#: costs linear time instead of one scan to the end of the text per match.
MAX_BODY = 4096
#: Real configs name ``ham_kwargs`` once or twice; later matches are not read.
MAX_MATCHES = 64
_OPENING = re.compile(r"\s*(?:dict\s*)?([({])")


def _bracket_body(text: str, start: int) -> Optional[str]:
    """The text inside the bracket that opens at or just after ``start`` (``dict(`` or ``{``),
    or None when it does not close within :data:`MAX_BODY` characters.

    Quotes are skipped so a ``)`` inside a string cannot end the body early.
    """
    match = _OPENING.match(text, start, min(len(text), start + 64))
    if not match:
        return None
    stack, quote, i = [_CLOSE[match.group(1)]], None, match.end()
    end = min(len(text), i + MAX_BODY)
    while i < end:
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
    for match in itertools.islice(_HAM_KWARGS.finditer(text), MAX_MATCHES):
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
        kwargs = plain_get(node, "ham_kwargs")
        if plain_get(node, "type") == "LightHamHead" or kwargs is not None:
            segnext = True
        if isinstance(kwargs, dict):
            for key, value in list(kwargs.items()):
                if type(key) is str and key.lower() == "md_r" and plain_int(value) is not None:
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
    text = plain_str(config)
    return _md_r_from_text(text) if text else None


def seed_from_config(config: object) -> Optional[Found]:
    """The seed a config records: mmcv's ``seed = N`` line or MMEngine's ``randomness``.

    mmcv's ``tools/train.py`` writes the seed it used into the config before dumping it
    into ``meta.config``; MMEngine keeps the requested one in ``randomness = dict(seed=N)``
    (``seed=None`` there means a random seed, so nothing is reported).
    """
    if isinstance(config, dict):
        seed = plain_int(plain_get(config, "seed"))
        if seed is not None:
            return Found(seed, f"seed = {seed}")
        seed = plain_int(plain_get(plain_get(config, "randomness"), "seed"))
        return Found(seed, f"randomness = dict(seed={seed})") if seed is not None else None
    text = plain_str(config)
    if not text:
        return None
    match = _SEED_LINE.search(text)
    if match:
        return Found(int(match.group(1)), f"seed = {match.group(1)}")
    for start in itertools.islice(_RANDOMNESS.finditer(text), MAX_MATCHES):
        body = _bracket_body(text, start.end())
        key = _SEED_KEY.search(_blank_strings(body)) if body else None
        if key:
            return Found(int(key.group(1)), f"randomness = dict(seed={key.group(1)})")
    return None
