"""Published SegNeXt artifacts: the packaged ``data/registry.yaml``, validated and named.

The facts (URLs, hashes, metrics, where each MD_R comes from) live in the YAML file so
that correcting one is a data change reviewed on its own; this module only checks that
the file is well formed and answers look-ups. The file is validated strictly on load: a
typo in a field name would otherwise silently turn a pinned hash into "unknown".
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.resources
import os
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import yaml

from ..conversion.layouts import layout_names
from ..errors import BadInputError
from ..models.variants import HEAD_NUM_GROUPS, VARIANTS, is_positive_int

PathLike = Union[str, "os.PathLike[str]"]

SCHEMA_VERSION = 1
KINDS = ("segmentor", "backbone")
DATASETS = ("ade20k", "cityscapes", "isaid", "imagenet")
TEST_MODES = ("whole", "slide")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
_HASH_PREFIX_RE = re.compile(r"^[0-9a-f]{8}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Metrics:
    """Reported numbers, as published (percent mIoU); ``source`` says which table."""

    miou: Optional[float]
    miou_ms: Optional[float]
    fps: Optional[float]
    source: Optional[str]


@dataclass(frozen=True)
class Artifact:
    """One published file. Field meanings are documented at the top of registry.yaml."""

    name: str
    variant: str
    kind: str
    params: int
    dataset: str
    num_classes: Optional[int]
    md_r: Optional[int]
    md_r_settled: Optional[bool]
    md_r_source: str
    test_mode: Optional[str]
    test_crop_size: Optional[tuple[int, int]]
    test_stride: Optional[tuple[int, int]]
    resize_scale: Optional[tuple[int, int]]
    test_source: str
    layout: str
    url: str
    url_verified: bool
    filename: str
    hash_prefix: Optional[str]
    sha256: Optional[str]
    size: Optional[int]
    log_url: Optional[str]
    metrics: Metrics
    provenance: str
    license: str
    # Optional field: the decode head's width where it differs from the variant's (PaddleSeg
    # builds every size 256 wide); None means the variant's own.
    ham_channels: Optional[int] = None

    @property
    def is_backbone(self) -> bool:
        """Backbone artifacts load into a bare MSCAN (keys without a prefix)."""
        return self.kind == "backbone"


_FIELDS = tuple(f.name for f in dataclasses.fields(Artifact))
_OPTIONAL_FIELDS = ("ham_channels",)
_METRIC_FIELDS = tuple(f.name for f in dataclasses.fields(Metrics))


# --------------------------------------------------------------------------- loading


# libyaml's parser when PyYAML was built with it: the pure-Python one takes ~0.2 s for
# this file, most of `segnext-hub list`'s run time. Same safe constructors either way.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise BadInputError(f"duplicate key {key!r} at line {line}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _packaged_text() -> tuple[str, str]:
    resource = importlib.resources.files("segnext_hub").joinpath("data/registry.yaml")
    return resource.read_text(encoding="utf-8"), "segnext_hub/data/registry.yaml"


def _parse_yaml(text: str, origin: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except BadInputError as err:
        raise BadInputError(f"registry {origin}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise BadInputError(f"registry {origin}: not valid YAML{where}: {problem}") from None


def load_registry(path: Optional[PathLike] = None) -> Mapping[str, Artifact]:
    """Name -> :class:`Artifact`, in file order; validated, read-only.

    Without ``path`` the packaged registry is read once per process (cached). A ``path``
    (for tests or a private registry) is read afresh every call.
    """
    if path is None:
        return _load_packaged()
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except OSError as err:
        raise BadInputError(f"cannot read registry {target}: {err.strerror or err}") from None
    return _build(_parse_yaml(text, str(target)), str(target))


@functools.lru_cache(maxsize=1)
def _load_packaged() -> Mapping[str, Artifact]:
    text, origin = _packaged_text()
    return _build(_parse_yaml(text, origin), origin)


@dataclass(frozen=True)
class AliasRules:
    """The registry's ``aliases`` section: how other spellings map onto entries."""

    model: frozenset
    words: Mapping[str, str]
    ignore: "re.Pattern[str]"
    default_source: str


@functools.lru_cache(maxsize=1)
def _alias_rules() -> Optional[AliasRules]:
    text, origin = _packaged_text()
    raw = _parse_yaml(text, origin).get("aliases")
    if raw is None:
        return None
    try:
        return AliasRules(frozenset(raw["model"]), types.MappingProxyType(dict(raw["words"])),
                          re.compile("|".join(f"(?:{p})" for p in raw["ignore"])), str(raw["default_source"]))
    except (KeyError, TypeError, re.error) as err:
        raise BadInputError(f"registry {origin}: malformed 'aliases' section ({err})") from None


def alias_candidates(name: str, registry: Mapping[str, Artifact]) -> list[Artifact]:
    """The entries another spelling may mean (``SegNeXt-B``, ``segnext_tiny_512x512_ade_160k``),
    by the rules documented in registry.yaml's ``aliases`` section: one entry when it is
    unambiguous, several when it names a dataset that several sources publish, none when it
    does not parse."""
    rules = _alias_rules()
    if rules is None:
        return []
    words = [w for w in re.split(r"[-_.\s]+", name.strip().lower()) if w]
    if not any(w in rules.model for w in words):
        return []
    found: dict[str, set] = {"variant": set(), "dataset": set(), "source": set()}
    for word in words:
        if word in rules.model or rules.ignore.fullmatch(word):
            continue
        canonical = rules.words.get(word)
        if canonical is None:
            return []  # an unknown word: a typo or another model, not something to guess
        kind = "variant" if canonical in VARIANTS else "dataset" if canonical in DATASETS else "source"
        found[kind].add(canonical)
    if len(found["variant"]) != 1 or len(found["dataset"]) > 1 or len(found["source"]) > 1:
        return []
    variant = next(iter(found["variant"]))
    dataset = next(iter(found["dataset"]), "ade20k")
    sources = found["source"] or ({rules.default_source} if not found["dataset"] else set(layout_names()))
    return [art for art in registry.values()
            if art.variant == variant and art.dataset == dataset and art.layout in sources]


def _build(document: Any, origin: str) -> Mapping[str, Artifact]:
    if not isinstance(document, dict) or not {"schema_version", "artifacts"} <= set(document) \
            or not set(document) <= {"schema_version", "artifacts", "aliases"}:
        raise BadInputError(
            f"registry {origin}: expected a mapping with exactly 'schema_version' and 'artifacts' "
            "(and optionally 'aliases')"
        )
    if document["schema_version"] != SCHEMA_VERSION:
        raise BadInputError(
            f"registry {origin}: schema_version {document['schema_version']!r} is not supported "
            f"(this segnext-hub reads {SCHEMA_VERSION})"
        )
    entries = document["artifacts"]
    if not isinstance(entries, list) or not entries:
        raise BadInputError(f"registry {origin}: 'artifacts' must be a non-empty list")
    artifacts: dict[str, Artifact] = {}
    for index, raw in enumerate(entries, start=1):
        label = _entry_label(raw, index)
        try:
            artifact = _artifact_from(raw)
        except _EntryError as err:
            raise BadInputError(f"registry {origin}: {label}: {err}") from None
        if artifact.name in artifacts:
            raise BadInputError(f"registry {origin}: {label}: duplicate name {artifact.name!r}")
        artifacts[artifact.name] = artifact
    return types.MappingProxyType(artifacts)


def _entry_label(raw: Any, index: int) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"entry {index} ({name!r})" if isinstance(name, str) else f"entry {index}"


# --------------------------------------------------------------------------- validation


class _EntryError(Exception):
    """A problem inside one entry; the caller adds the file and entry name."""


def _artifact_from(raw: Any) -> Artifact:
    if not isinstance(raw, dict):
        raise _EntryError(f"must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_FIELDS), key=str)
    if unknown:
        raise _EntryError(f"unknown field(s) {', '.join(map(repr, unknown))}")
    missing = [name for name in _FIELDS if name not in raw and name not in _OPTIONAL_FIELDS]
    if missing:
        raise _EntryError(f"missing field(s) {', '.join(map(repr, missing))}")
    values = dict(raw)
    values["metrics"] = _metrics_from(raw["metrics"])
    for pair in ("test_crop_size", "test_stride", "resize_scale"):
        values[pair] = _pair(raw[pair], pair)
    _check_scalars(values)
    _check_kind_rules(values)
    _check_file_fields(values)
    return Artifact(**values)


def _metrics_from(raw: Any) -> Metrics:
    if not isinstance(raw, dict):
        raise _EntryError("'metrics' must be a mapping")
    unknown = sorted(set(raw) - set(_METRIC_FIELDS), key=str)
    missing = [name for name in _METRIC_FIELDS if name not in raw]
    if unknown or missing:
        raise _EntryError(
            f"'metrics' needs exactly {', '.join(_METRIC_FIELDS)}"
            + (f"; unknown {', '.join(map(repr, unknown))}" if unknown else "")
            + (f"; missing {', '.join(map(repr, missing))}" if missing else "")
        )
    for key in ("miou", "miou_ms", "fps"):
        value = raw[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _EntryError(f"metrics.{key} must be a number or null, got {value!r}")
    if raw["source"] is not None and not isinstance(raw["source"], str):
        raise _EntryError("metrics.source must be text or null")
    return Metrics(**{k: (float(v) if isinstance(v, int) else v) for k, v in raw.items()})


def _pair(value: Any, field: str) -> Optional[tuple[int, int]]:
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 2
            or not all(is_positive_int(v) for v in value)):
        raise _EntryError(f"{field!r} must be two positive integers or null, got {value!r}")
    return (value[0], value[1])


def _require(values: dict, field: str, allowed: tuple[str, ...]) -> None:
    if values[field] not in allowed:
        raise _EntryError(f"{field} {values[field]!r} is not one of {', '.join(allowed)}")


def _require_text(values: dict, field: str, nullable: bool = False) -> None:
    value = values[field]
    if value is None and nullable:
        return
    if not isinstance(value, str) or not value.strip():
        raise _EntryError(f"{field!r} must be non-empty text" + (" or null" if nullable else ""))


def _check_scalars(values: dict) -> None:
    for field in ("name", "md_r_source", "test_source", "url", "filename", "provenance", "license"):
        _require_text(values, field)
    _require_text(values, "log_url", nullable=True)
    if not _NAME_RE.match(values["name"]):
        raise _EntryError("name must be lower-case letters, digits, '-' or '.'")
    if values["variant"] not in VARIANTS:
        raise _EntryError(f"variant {values['variant']!r} is not one of {', '.join(VARIANTS)}")
    _require(values, "kind", KINDS)
    _require(values, "dataset", DATASETS)
    _require(values, "layout", layout_names())
    if not is_positive_int(values["params"]):
        raise _EntryError(f"params must be a positive integer, got {values['params']!r}")
    if not isinstance(values["url_verified"], bool):
        raise _EntryError("url_verified must be true or false")
    for field in ("url", "log_url"):
        url = values[field]
        if url is not None and not url.startswith(("https://", "http://")):
            raise _EntryError(f"{field} must be an http(s) URL, got {url!r}")


def _check_kind_rules(values: dict) -> None:
    """Segmentors need everything inference needs; backbones must leave it empty."""
    head_fields = ("num_classes", "md_r", "md_r_settled", "test_mode", "resize_scale", "ham_channels")
    width = values.get("ham_channels")
    if width is not None and (not is_positive_int(width) or width % HEAD_NUM_GROUPS):
        raise _EntryError(f"ham_channels must be a positive multiple of {HEAD_NUM_GROUPS} or absent, got {width!r}")
    if values["kind"] == "backbone":
        set_fields = [f for f in head_fields + ("test_crop_size", "test_stride") if values.get(f) is not None]
        if set_fields:
            raise _EntryError(f"a backbone has no head: {', '.join(set_fields)} must be null")
        return
    for field in ("num_classes", "md_r"):
        if not is_positive_int(values[field]):
            raise _EntryError(f"{field} must be a positive integer for a segmentor")
    if not isinstance(values["md_r_settled"], bool):
        raise _EntryError("md_r_settled must be true or false for a segmentor")
    _require(values, "test_mode", TEST_MODES)
    if values["resize_scale"] is None:
        raise _EntryError("resize_scale is required for a segmentor")
    sliding = values["test_mode"] == "slide"
    for field in ("test_crop_size", "test_stride"):
        if sliding and values[field] is None:
            raise _EntryError(f"test_mode 'slide' needs {field}")
        if not sliding and values[field] is not None:
            raise _EntryError(f"{field} is only meaningful with test_mode 'slide'")


def _check_file_fields(values: dict) -> None:
    filename = values["filename"]
    if "/" in filename or "\\" in filename or filename.startswith(".") or filename != filename.strip():
        raise _EntryError(f"filename {filename!r} must be a plain file name")
    prefix = values["hash_prefix"]
    if prefix is not None:
        if not isinstance(prefix, str) or not _HASH_PREFIX_RE.match(prefix):
            raise _EntryError(
                f"hash_prefix must be 8 lower-case hex digits (quote it in YAML), got {prefix!r}"
            )
        if Path(filename).stem.rsplit("-", 1)[-1] != prefix:
            raise _EntryError(f"hash_prefix {prefix!r} does not match the suffix of filename {filename!r}")
    sha = values["sha256"]
    if sha is not None and (not isinstance(sha, str) or not _SHA256_RE.match(sha)):
        raise _EntryError("sha256 must be 64 lower-case hex digits or null")
    if sha is not None and prefix is not None and not sha.startswith(prefix):
        raise _EntryError(f"sha256 does not start with hash_prefix {prefix!r}; keep one or fix both")
    if values["size"] is not None and not is_positive_int(values["size"]):
        raise _EntryError("size must be a positive integer (bytes) or null")


# --------------------------------------------------------------------------- look-ups


def list_artifacts() -> list[Artifact]:
    """Every packaged artifact, in registry order."""
    return list(load_registry().values())


def list_models() -> list[str]:
    """Names of every published artifact (``segnext-hub list`` shows details)."""
    return [artifact.name for artifact in list_artifacts()]


def _normalise_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def get_artifact(name: str) -> Artifact:
    """Resolve a registry name (case and ``_``/``-`` insensitive) or an alias (the paper's,
    the official repo's and MMSeg's spellings, see :func:`resolve_alias`).

    Unknown names raise :class:`BadInputError` with up to three close matches, since
    most misses are a missing suffix (``mscan-t-ade20k`` for ``...-official``).
    """
    if not isinstance(name, str):
        raise BadInputError(f"artifact name must be a string, got {type(name).__name__}")
    registry = load_registry()
    key = _normalise_name(name)
    if key in registry:
        return registry[key]
    candidates = alias_candidates(name, registry)
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise BadInputError(f"{name.strip()!r} is ambiguous: did you mean "
                            f"{', '.join(art.name for art in candidates)}?")
    rules = _alias_rules()
    spelled = key
    for word in sorted(rules.model if rules else ()):  # segnext-xl -> mscan-xl, then compare
        spelled = re.sub(rf"(^|-){re.escape(word)}(-|$)", r"\1mscan\2", spelled)
    suggestions = difflib.get_close_matches(spelled, list(registry), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(suggestions)}?" if suggestions else "no close match"
    raise BadInputError(
        f"unknown artifact {name.strip()!r}: {hint} (`segnext-hub list` shows all {len(registry)} names)"
    )


def expected_param_count(artifact: Artifact) -> int:
    """Parameters of the model the artifact loads into (segmentor or bare backbone).

    Read from the registry's ``params`` field: data, so that ``segnext-hub list`` builds
    no model and imports no torch (tests check the field against the real model).
    """
    return artifact.params


def expected_shapes(artifact: Artifact) -> dict[str, tuple[int, ...]]:
    """MMSeg-named state-dict keys -> shapes the converted weights must have.

    Built on the meta device (nothing allocated); torch is imported here, kept out of the
    commands that only read the registry.
    """
    return dict(_meta_model_shapes(artifact.variant, artifact.num_classes, artifact.is_backbone,
                                   artifact.ham_channels))


@functools.lru_cache(maxsize=None)
def _meta_model_shapes(variant: str, num_classes: Optional[int], backbone_only: bool,
                       ham_channels: Optional[int] = None) -> Mapping[str, tuple[int, ...]]:
    import torch

    from ..models import build_model

    with torch.device("meta"):
        model = build_model(variant, num_classes=num_classes or 1, backbone_only=backbone_only,
                            ham_channels=ham_channels)
    return types.MappingProxyType({key: tuple(t.shape) for key, t in model.state_dict().items()})
