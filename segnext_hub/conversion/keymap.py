"""Declarative key maps: load ``key_maps/*.yaml``, apply them, invert them, account for keys.

A key map is data: an ordered list of rules (strip a prefix, drop anchored patterns,
rename with ``{placeholder}`` templates, add missing buffers, reshape a tensor whose layout
stores it in another shape, e.g. PaddleSeg's (C, 1, 1) layer scales). Keeping renames as
templates rather than raw regexes is what makes every map invertible, so the reverse
direction (MMSeg -> official) is derived from the same file instead of written twice.
Every source key ends up in exactly one bucket of the :class:`MappingResult`: kept,
renamed, dropped (with the rule that dropped it) or -- for added keys -- created.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
import yaml

from ..errors import BadInputError
from .pickled import safe_repr

KEY_MAP_PACKAGE = "segnext_hub.key_maps"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DTYPES = {"int64": torch.int64, "float32": torch.float32}


def _template_regex(template: str) -> re.Pattern[str]:
    """``"{stem}.mlp.dwconv.{param}"`` -> an anchored regex with named groups."""
    parts, last = [], 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[last:match.start()]))
        parts.append(f"(?P<{match.group(1)}>.+?)")
        last = match.end()
    parts.append(re.escape(template[last:]))
    return re.compile("".join(parts) + r"\Z")


@dataclass(frozen=True)
class Rule:
    """One step of a key map. ``kind`` is strip_prefix, drop, rename, add or reshape."""

    kind: str
    pattern: str  # prefix, anchored regex, source template, key template to add, or key template to reshape
    target: str = ""  # rename: target template; add: the key that must exist (for_each)
    why: str = ""
    value: float = 0.0
    dtype: str = "int64"
    shape_from: tuple[int, ...] = ()  # reshape: the shape found (-1: any size, exactly once)
    shape_to: tuple[int, ...] = ()  # reshape: the shape made (-1: whatever keeps the element count)

    def describe(self) -> str:
        if self.kind == "rename":
            return f"rename {self.pattern} -> {self.target}"
        if self.kind == "add":
            return f"add {self.pattern} for each {self.target}"
        if self.kind == "reshape":
            return f"reshape {self.pattern} {_shape_text(self.shape_from)} -> {_shape_text(self.shape_to)}"
        return f"{self.kind} {self.pattern}"


def _shape_text(spec: tuple[int, ...]) -> str:
    return "(" + ", ".join("C" if dim == -1 else str(dim) for dim in spec) + ("," if len(spec) == 1 else "") + ")"


def _fits(shape: tuple[int, ...], spec: tuple[int, ...]) -> bool:
    return len(shape) == len(spec) and all(want in (-1, got) for got, want in zip(shape, spec))


@dataclass
class MappingResult:
    """The mapped state dict and where every key came from."""

    tensors: dict[str, torch.Tensor]
    renamed: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (key, rule description)
    added: list[str] = field(default_factory=list)
    reshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # (key, from, to)
    stripped_prefixes: dict[str, int] = field(default_factory=dict)
    rule_hits: dict[str, int] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return len(self.tensors) - len(self.renamed) - len(self.added)


@dataclass(frozen=True)
class KeyMap:
    name: str
    description: str
    unwrap: tuple[str, ...]
    rules: tuple[Rule, ...]
    reversed: bool = False

    # ------------------------------------------------------------------ applying
    def apply(self, state: Mapping[str, torch.Tensor]) -> MappingResult:
        """Run the rules in order; raise BadInputError if two keys collide."""
        keys: dict[str, str] = {k: k for k in state}  # current name -> source name
        result = MappingResult(tensors={})
        hits: dict[str, int] = {}
        added: dict[str, torch.Tensor] = {}
        reshapes: dict[str, Rule] = {}  # source name -> its reshape rule
        for rule in self.rules:
            label = rule.describe()
            hits[label] = 0
            if rule.kind == "strip_prefix":
                renamed = {}
                for cur, src in keys.items():
                    if cur.startswith(rule.pattern):
                        hits[label] += 1
                        cur = cur[len(rule.pattern):]
                    renamed[cur] = src
                if len(renamed) != len(keys):
                    raise BadInputError(f"stripping '{rule.pattern}' makes two keys collide")
                keys = renamed
                if hits[label]:
                    result.stripped_prefixes[rule.pattern] = hits[label]
            elif rule.kind == "drop":
                regex = re.compile(rule.pattern)
                survivors = {}
                for cur, src in keys.items():
                    if regex.search(cur):
                        hits[label] += 1
                        result.dropped.append((src, rule.why or label))
                    else:
                        survivors[cur] = src
                keys = survivors
            elif rule.kind == "rename":
                source, target = _template_regex(rule.pattern), rule.target
                renamed = {}
                for cur, src in keys.items():
                    match = source.match(cur)
                    if match:
                        hits[label] += 1
                        cur = _PLACEHOLDER.sub(lambda m: match.group(m.group(1)), target)
                    if cur in renamed:
                        raise BadInputError(f"key map '{self.name}' maps two keys onto '{cur}' "
                                            f"({renamed[cur]} and {src})")
                    renamed[cur] = src
                keys = renamed
            elif rule.kind == "add":
                anchor = _template_regex(rule.target)
                for cur in list(keys):
                    match = anchor.match(cur)
                    if not match:
                        continue
                    new_key = _PLACEHOLDER.sub(lambda m: match.group(m.group(1)), rule.pattern)
                    if new_key in keys or new_key in added:
                        continue
                    hits[label] += 1
                    added[new_key] = torch.tensor(rule.value, dtype=_DTYPES[rule.dtype])
            elif rule.kind == "reshape":
                matcher = _template_regex(rule.pattern)
                for cur, src in keys.items():
                    if matcher.match(cur):
                        hits[label] += 1
                        reshapes[src] = rule
        for cur, src in keys.items():
            tensor = state[src]
            rule = reshapes.get(src)
            if rule is not None:
                tensor = self._reshaped(src, tensor, rule)
                result.reshaped.append((cur, tuple(state[src].shape), tuple(tensor.shape)))
            result.tensors[cur] = tensor
            if cur != src:
                result.renamed.append((src, cur))
        for key, value in added.items():
            result.tensors[key] = value
            result.added.append(key)
        result.rule_hits = hits
        return result

    def _reshaped(self, key: str, tensor: torch.Tensor, rule: Rule) -> torch.Tensor:
        """The tensor in the rule's target shape; a shape the rule does not expect is bad input."""
        if not _fits(tuple(tensor.shape), rule.shape_from):
            raise BadInputError(f"key map '{self.name}': {key[:100]} has shape {tuple(tensor.shape)}, "
                                f"expected {_shape_text(rule.shape_from)}")
        return tensor.reshape(rule.shape_to)

    # ------------------------------------------------------------------ inverting
    def inverted(self) -> "KeyMap":
        """The reverse direction (MMSeg names -> this layout), derived from the same rules.

        Renames swap their templates; reshapes swap their shapes; added buffers are dropped
        again; prefix strips and drops have no inverse (a dropped ImageNet classifier cannot
        come back).
        """
        rules: list[Rule] = []
        for rule in reversed(self.rules):
            if rule.kind == "rename":
                rules.append(Rule("rename", rule.target, rule.pattern))
            elif rule.kind == "reshape":
                rules.append(Rule("reshape", rule.pattern, why=rule.why, shape_from=rule.shape_to,
                                  shape_to=rule.shape_from))
            elif rule.kind == "add":
                key_regex = _template_regex(rule.pattern).pattern
                rules.append(Rule("drop", "^" + key_regex, why=f"{self.name} layout has no such buffer"))
        return KeyMap(f"{self.name}-reverse", f"MMSeg names -> {self.name} layout", self.unwrap,
                      tuple(rules), reversed=not self.reversed)


def _parse_rule(entry: Any, source: str) -> Rule:
    if not isinstance(entry, dict):
        raise BadInputError(f"key map {source}: each rule must be a mapping, got {entry!r}")
    why = str(entry.get("why", ""))
    if "strip_prefix" in entry:
        return Rule("strip_prefix", str(entry["strip_prefix"]), why=why)
    if "drop" in entry:
        pattern = str(entry["drop"])
        if not pattern.startswith("^"):
            raise BadInputError(f"key map {source}: drop pattern {pattern!r} must be anchored with '^'")
        re.compile(pattern)
        return Rule("drop", pattern, why=why)
    if "rename" in entry:
        spec = entry["rename"]
        src, dst = str(spec["from"]), str(spec["to"])
        if set(_PLACEHOLDER.findall(src)) != set(_PLACEHOLDER.findall(dst)):
            raise BadInputError(f"key map {source}: rename {src!r} -> {dst!r} must use the same placeholders")
        return Rule("rename", src, dst, why=why)
    if "add" in entry:
        spec = entry["add"]
        dtype = str(spec.get("dtype", "int64"))
        if dtype not in _DTYPES:
            raise BadInputError(f"key map {source}: unsupported dtype {dtype!r}")
        return Rule("add", str(spec["key"]), str(spec["for_each"]), why=why,
                    value=float(spec.get("value", 0)), dtype=dtype)
    if "reshape" in entry:
        spec = entry["reshape"]
        shapes = tuple(_shape_spec(spec[side], f"key map {source}: reshape {side}") for side in ("from", "to"))
        return Rule("reshape", str(spec["key"]), why=why, shape_from=shapes[0], shape_to=shapes[1])
    raise BadInputError(f"key map {source}: unknown rule {sorted(entry)}")


def _shape_spec(value: Any, what: str) -> tuple[int, ...]:
    """A reshape side: whole numbers, with exactly one -1 (the size that carries over), so that
    every reshape keeps the element count and has an inverse."""
    if not isinstance(value, list) or not all(type(dim) is int and (dim == -1 or dim > 0) for dim in value) \
            or value.count(-1) != 1:
        raise BadInputError(f"{what} must be a list of positive sizes with exactly one -1, got {value!r}")
    return tuple(value)


def parse_key_map(text: str, source: str = "<string>") -> KeyMap:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise BadInputError(f"key map {source} is not valid YAML: {err}".splitlines()[0]) from None
    if not isinstance(data, dict) or "name" not in data or "rules" not in data:
        raise BadInputError(f"key map {source} needs 'name' and 'rules'")
    try:
        rules = tuple(_parse_rule(entry, source) for entry in data["rules"])
    except (KeyError, TypeError, re.error) as err:  # a missing field of a rule
        raise BadInputError(f"key map {source}: malformed rule ({err})") from None
    return KeyMap(str(data["name"]), str(data.get("description", "")),
                  tuple(data.get("unwrap", ())), rules)


def available_key_maps() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(KEY_MAP_PACKAGE).iterdir() if p.name.endswith(".yaml"))


def load_key_map(name_or_path: Union[str, Path]) -> KeyMap:
    """A shipped map by name (``official``, ``jittor``, ``mmseg``) or a YAML file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return parse_key_map(path.read_text(), str(path))
    name = str(name_or_path)
    if name not in available_key_maps():
        raise BadInputError(f"unknown key map {name!r}; available: {', '.join(available_key_maps())}")
    text = (resources.files(KEY_MAP_PACKAGE) / f"{name}.yaml").read_text()
    return parse_key_map(text, f"{name}.yaml")


#: Real state dict keys are under 200 characters; the templates' lazy groups cost time quadratic in
#: a key's length when it fails to match, so a 1 MB crafted key would stall a rename for minutes.
MAX_KEY_LENGTH = 1000


def find_state_dict(obj: Any, unwrap: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], Optional[str]]:
    """The tensor mapping inside a checkpoint container, and the container key used."""
    if _is_state_dict(obj):
        return _checked_keys(dict(obj)), None
    if isinstance(obj, Mapping):
        for key in unwrap:
            if key in obj and _is_state_dict(obj[key]):
                return _checked_keys(dict(obj[key])), key
    if isinstance(obj, Mapping):
        shown = ", ".join(sorted(key[:60] if type(key) is str else safe_repr(key, 60) for key in obj)[:6])
        raise BadInputError(f"no state dict found (top-level keys: {shown}; looked for {', '.join(unwrap)})")
    raise BadInputError(f"no state dict found: the checkpoint holds a {type(obj).__name__}")


def _checked_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys every later step can match and print on one line: bounded length, no control characters."""
    longest = max(state, key=len)
    if len(longest) > MAX_KEY_LENGTH:
        raise BadInputError(f"state dict key of {len(longest)} characters ({longest[:40]!r}...); "
                            f"no real key is longer than {MAX_KEY_LENGTH}")
    odd = next((key for key in state if not key.isprintable()), None)
    if odd is not None:
        raise BadInputError(f"state dict key {odd[:60]!r} holds a control character")
    return state


def _is_state_dict(obj: Any) -> bool:
    if not isinstance(obj, Mapping) or not obj:
        return False
    if not all(isinstance(k, str) for k in obj):
        return False
    tensors = sum(isinstance(v, torch.Tensor) for v in obj.values())
    if tensors == len(obj):
        return True
    if tensors > len(obj) // 2:
        bad = next(k for k, v in obj.items() if not isinstance(v, torch.Tensor))
        raise BadInputError(f"state dict entry {bad[:100]!r} holds a {type(obj[bad]).__name__}, not a tensor")
    return False
