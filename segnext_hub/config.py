"""``ArtifactConfig``: everything that describes a model artifact, and its two written forms.

One frozen dataclass travels with every model (``model.segnext_config``) and is what
config.json (the cache, Hub repos, exported folders) and the metadata of a segnext-hub
safetensors file say. This module alone turns it into and out of those forms, so a field
added here reaches every writer and reader at once; nobody else builds the dict.

Values that drive work (class count, NMF rank, test sizes, colours) are bounded when read:
a config file is input like any other (a shared cache is group-writable), and a rank of
10^6 or a crop of 1x1 would otherwise turn into an allocation or a loop nobody asked for.
No torch here: commands that only read configs stay fast.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from ._version import __version__
from .errors import BadInputError
from .fileio import read_json_file

ARCHITECTURE = "segnext"
KINDS = ("segmentor", "backbone")
VARIANT_NAMES = ("t", "s", "b", "l")
TEST_MODES = ("whole", "slide")
#: Largest class count read from a file (COCO-Stuff has 171; 4096 leaves room for any real head).
MAX_CLASSES = 4096
#: Largest NMF rank read from a file: no published head is wider than 1024 channels.
MAX_MD_R = 1024
#: The decode head's default width per variant (models.variants' ham_channels; a test keeps
#: them equal), when ``ham_channels`` is None: an NMF rank above the width only asks for
#: memory, so a file saying so is refused.
HEAD_CHANNELS = {"t": 256, "s": 256, "b": 512, "l": 1024}
#: Test-time sizes (resize scale, crop, stride), in pixels: from 32 to 8192 per side.
MIN_SIDE, MAX_SIDE = 32, 8192


def _check(ok: bool, field_name: str, value: Any, rule: str) -> None:
    if not ok:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ValueError(f"{field_name} {shown} {rule}")


def _count(name: str, value: Any, limit: int) -> Optional[int]:
    if value is None:
        return None
    _check(type(value) is int and 1 <= value <= limit, name, value, f"must be an integer in 1..{limit}")
    return value


def _width(name: str, value: Any) -> Optional[int]:
    if value is None:
        return None
    _check(type(value) is int and 32 <= value <= MAX_MD_R and value % 32 == 0, name, value,
           f"must be a multiple of 32 in 32..{MAX_MD_R} (the head's GroupNorm has 32 groups)")
    return value


def _text(name: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    _check(isinstance(value, str) and len(value) <= 4096, name, value, "must be text (at most 4096 characters)")
    return value


def _size(name: str, value: Any) -> Optional[tuple[int, int]]:
    if value is None:
        return None
    _check(isinstance(value, (list, tuple)) and len(value) == 2
           and all(type(v) is int and MIN_SIDE <= v <= MAX_SIDE for v in value),
           name, value, f"must be two integers in {MIN_SIDE}..{MAX_SIDE}")
    return (value[0], value[1])


def _names(name: str, value: Any) -> Optional[tuple[str, ...]]:
    if value is None:
        return None
    _check(isinstance(value, (list, tuple)) and 0 < len(value) <= MAX_CLASSES
           and all(isinstance(v, str) and len(v) <= 256 for v in value), name, value,
           f"must be a list of 1..{MAX_CLASSES} names")
    return tuple(value)


def _palette(name: str, value: Any) -> Optional[tuple[tuple[int, int, int], ...]]:
    if value is None:
        return None
    _check(isinstance(value, (list, tuple)) and 0 < len(value) <= MAX_CLASSES and all(
        isinstance(c, (list, tuple)) and len(c) == 3 and all(type(v) is int and 0 <= v <= 255 for v in c)
        for c in value), name, value, "must be a list of [r, g, b] colours in 0..255")
    return tuple((c[0], c[1], c[2]) for c in value)


def _seed(name: str, value: Any) -> Optional[int]:
    if value is None:
        return None
    _check(type(value) is int and 0 <= value < 2**64, name, value, "must be an integer in 0..2^64-1")
    return value


def _choice(name: str, value: Any, choices: Sequence[str], nullable: bool = True) -> Optional[str]:
    if value is None and nullable:
        return None
    _check(value in choices, name, value, f"must be one of {', '.join(choices)}")
    return value


def _weights(name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    _check(isinstance(value, (list, tuple)) and len(value) <= 10_000
           and all(isinstance(v, str) and len(v) <= 1000 for v in value), name, value, "must be a list of keys")
    return tuple(value)


#: Fields that metadata stores as JSON (numbers, lists); the rest are plain strings.
_JSON_FIELDS = frozenset({"num_classes", "md_r", "ham_channels", "classes", "palette", "training_seed", "resize_scale",
                          "test_crop_size", "test_stride", "new_weights"})


@dataclass(frozen=True)
class ArtifactConfig:
    """What a model artifact is, where each decisive value came from, and how to test it.

    ``md_r``, ``training_seed``, ``classes`` and ``palette`` decide outputs without being
    weights; each has a ``*_source`` saying where it was read (checkpoint meta, training
    log, registry, a user override). Test-time fields are None where the dataset's MMSeg
    settings apply. ``new_weights`` lists tensors that did not come from the artifact
    (a new classifier, a new head). Backbones have no classes, rank or test settings.

    Frozen and checked on construction (bounded counts and texts), whoever builds it: a
    ``config.json`` or safetensors header from elsewhere cannot smuggle in a value the
    model builder would choke on. ``to_json``/``from_json`` are the config.json form,
    ``to_metadata``/``from_metadata`` the safetensors-header form.

    Attributes:
        variant: ``"t"``, ``"s"``, ``"b"`` or ``"l"``.
        kind: ``"segmentor"`` or ``"backbone"``.
        num_classes: Outputs of the classifier (segmentors only).
        md_r: The NMF rank the weights were trained with; ``md_r_source`` says where it was read.
        name: The registry name, where the artifact is a published one.
        dataset: ``ade20k``, ``cityscapes``, ``isaid``, ... (sets the default classes and palette).
        classes: The artifact's own class names, where they differ from the dataset's.
        palette: The artifact's own RGB colours, one per class.
        training_seed: The seed the run was trained with (``segnext-hub eval``'s default).
        test_mode: ``"whole"`` or ``"slide"``; with ``resize_scale``, ``test_crop_size`` and
            ``test_stride``, the test settings (None: the dataset's).
        source_layout: The layout the weights were converted from (``official``, ``jittor``...).
        new_weights: Tensors that did not come from the artifact (a new classifier, a new head).
        pretrained_backbone: Where ``create_model`` took the backbone from.
    """

    variant: str
    kind: str = "segmentor"
    num_classes: Optional[int] = None
    md_r: Optional[int] = None
    md_r_source: Optional[str] = None
    ham_channels: Optional[int] = None  # the decode head's width; None: the variant's
    name: Optional[str] = None
    architecture: str = ARCHITECTURE
    dataset: Optional[str] = None
    classes: Optional[tuple[str, ...]] = None
    classes_source: Optional[str] = None
    palette: Optional[tuple[tuple[int, int, int], ...]] = None
    palette_source: Optional[str] = None
    training_seed: Optional[int] = None
    training_seed_source: Optional[str] = None
    test_mode: Optional[str] = None
    resize_scale: Optional[tuple[int, int]] = None
    test_crop_size: Optional[tuple[int, int]] = None
    test_stride: Optional[tuple[int, int]] = None
    source_layout: Optional[str] = None
    source_url: Optional[str] = None
    license: Optional[str] = None
    segnext_hub_version: str = __version__
    new_weights: tuple[str, ...] = ()
    pretrained_backbone: Optional[str] = None

    def __post_init__(self) -> None:
        """Every value checked and normalised (lists to tuples), whoever built the config."""
        _check(self.architecture == ARCHITECTURE, "architecture", self.architecture, f"must be {ARCHITECTURE!r}")
        _choice("variant", self.variant, VARIANT_NAMES, nullable=False)
        _choice("kind", self.kind, KINDS, nullable=False)
        checked = {
            "num_classes": _count("num_classes", self.num_classes, MAX_CLASSES),
            "md_r": _count("md_r", self.md_r, MAX_MD_R),
            "ham_channels": _width("ham_channels", self.ham_channels),
            "classes": _names("classes", self.classes),
            "palette": _palette("palette", self.palette),
            "training_seed": _seed("training_seed", self.training_seed),
            "test_mode": _choice("test_mode", self.test_mode, TEST_MODES),
            "resize_scale": _size("resize_scale", self.resize_scale),
            "test_crop_size": _size("test_crop_size", self.test_crop_size),
            "test_stride": _size("test_stride", self.test_stride),
            "new_weights": _weights("new_weights", self.new_weights),
        }
        for name in ("md_r_source", "name", "dataset", "classes_source", "palette_source", "training_seed_source",
                     "source_layout", "source_url", "license", "segnext_hub_version", "pretrained_backbone"):
            _text(name, getattr(self, name))
        if checked["md_r"] is not None:
            width = checked["ham_channels"] or HEAD_CHANNELS[self.variant]
            _check(checked["md_r"] <= width, "md_r", checked["md_r"], f"is more than the head's {width} channels")
        if self.kind == "segmentor":
            _check(self.num_classes is not None, "num_classes", None, "is required for a segmentor")
            for name in ("classes", "palette"):
                value = checked[name]
                _check(value is None or len(value) == self.num_classes, name, f"{len(value or ())} entries",
                       f"must have one entry per class ({self.num_classes})")
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @property
    def is_backbone(self) -> bool:
        return self.kind == "backbone"

    def replace(self, **changes: Any) -> "ArtifactConfig":
        """A copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ config.json

    def to_json(self) -> dict[str, Any]:
        """The config.json object (tuples as lists; every field, None included)."""
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = [list(v) if isinstance(v, tuple) else v for v in value]
        return data

    @classmethod
    def from_json(cls, data: Any, where: str = "config.json") -> "ArtifactConfig":
        """A config.json object, as written by this or an earlier version.

        Raises:
            BadInputError: not an object, not a SegNeXt config, or a value out of range
                (the message names the field and ``where``).
        """
        if not isinstance(data, dict):
            raise BadInputError(f"{where} does not hold a JSON object")
        if data.get("architecture", ARCHITECTURE) != ARCHITECTURE:
            raise BadInputError(f"{where} does not describe a SegNeXt (architecture "
                                f"{str(data.get('architecture'))[:40]!r})")
        if "variant" not in data:
            raise BadInputError(f"{where} names no variant")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}  # later versions may add fields
        if values.get("kind") == "backbone":  # older files wrote explicit nulls; keep them out
            values = {k: v for k, v in values.items()
                      if k not in ("num_classes", "md_r", "ham_channels") or v is not None}
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise BadInputError(f"{where}: {err}") from None

    # ------------------------------------------------------------------ safetensors metadata

    def to_metadata(self) -> dict[str, str]:
        """The header metadata of a safetensors file (strings only; lists as JSON).

        Only fields with a value are written; ``format: pt`` is what safetensors' own
        loaders look for.
        """
        meta = {"format": "pt"}
        for key, value in self.to_json().items():
            if value is None or value == []:
                continue
            meta[key] = value if isinstance(value, str) else json.dumps(value)
        return meta

    @classmethod
    def from_metadata(cls, meta: Optional[Mapping[str, str]], where: str = "safetensors metadata"
                      ) -> Optional["ArtifactConfig"]:
        """The config a segnext-hub safetensors header records; None for any other file.

        Reads this version's form and the earlier one (segmentor fields as decimal
        strings, ``dataset`` "unknown"/"custom", no test settings).

        Raises:
            BadInputError: a segnext-hub header with a value out of range.
        """
        if not isinstance(meta, Mapping) or meta.get("architecture") != ARCHITECTURE:
            return None
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = meta.get(f.name)
            if not isinstance(raw, str):
                continue
            if f.name not in _JSON_FIELDS:
                values[f.name] = raw
                continue
            try:
                values[f.name] = json.loads(raw)
            except ValueError:
                raise BadInputError(f"{where}: {f.name} {raw[:40]!r} is not readable") from None
        if values.get("kind", "segmentor") == "backbone":
            for key in ("num_classes", "md_r", "ham_channels", "classes", "palette", "dataset"):
                values.pop(key, None)
        for key in ("classes", "palette"):
            if key in values:
                values.setdefault(f"{key}_source", "safetensors metadata")
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise BadInputError(f"{where}: {err}") from None


def read_config_file(path: Any) -> ArtifactConfig:
    """A config.json file as an ArtifactConfig; a damaged or foreign file is one clear error.

    Raises:
        BadInputError: unreadable, not JSON (or nested beyond any real config), or invalid.
    """
    return ArtifactConfig.from_json(read_json_file(path, "config"), str(path))

