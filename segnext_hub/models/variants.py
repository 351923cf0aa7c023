"""SegNeXt T/S/B/L hyper-parameters as frozen data.

The values mirror the MMSeg 1.x and official configs (see README, "Variants"). They are
frozen so that a variant can be shared between models without one model's tweak leaking
into another; use :func:`dataclasses.replace` to derive a modified copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# MSCA attention: one 5x5 depth-wise conv, then three strip branches of these lengths.
STRIP_KERNEL_SIZES: tuple[int, ...] = (7, 11, 21)


@dataclass(frozen=True)
class Variant:
    """Every number needed to build one SegNeXt size."""

    name: str
    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    mlp_ratios: tuple[int, int, int, int]
    drop_path_rate: float
    ham_channels: int
    # NMF rank: the official repo's value is the default for a freshly built model;
    # MMSeg 1.x's resolved configs say 16 for every size (see md_r_mmseg).
    md_r: int
    md_r_mmseg: int
    num_params_ade20k: int

    @property
    def head_in_channels(self) -> tuple[int, int, int]:
        """The head reads stages 2-4."""
        return self.embed_dims[1], self.embed_dims[2], self.embed_dims[3]

    @property
    def channels(self) -> int:
        """The head's output width equals the Hamburger width in every release."""
        return self.ham_channels


VARIANTS: dict[str, Variant] = {
    "t": Variant("t", (32, 64, 160, 256), (3, 3, 5, 2), (8, 8, 4, 4), 0.1, 256, 16, 16, 4_263_414),
    "s": Variant("s", (64, 128, 320, 512), (2, 2, 4, 2), (8, 8, 4, 4), 0.1, 256, 16, 16, 13_932_886),
    "b": Variant("b", (64, 128, 320, 512), (3, 3, 12, 3), (8, 8, 4, 4), 0.1, 512, 64, 16, 27_636_310),
    "l": Variant("l", (64, 128, 320, 512), (3, 5, 27, 3), (8, 8, 4, 4), 0.3, 1024, 64, 16, 48_926_550),
}


def get_variant(name: str) -> Variant:
    """Resolve ``"t"``, ``"T"``, ``"mscan-t"`` or ``"segnext-t"`` to a :class:`Variant`."""
    if not isinstance(name, str):
        raise ValueError(f"variant must be a string such as 't' or 'mscan-t', got {name!r}")
    key = name.strip().lower()
    for prefix in ("mscan-", "mscan_", "segnext-", "segnext_"):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    key = {"tiny": "t", "small": "s", "base": "b", "large": "l"}.get(key, key)
    if key not in VARIANTS:
        raise ValueError(
            f"unknown SegNeXt variant {name!r}; expected one of t, s, b, l "
            "(optionally as 'mscan-t' etc.)"
        )
    return VARIANTS[key]


def is_positive_int(value: Any) -> bool:
    """A count such as ``num_classes`` or ``md_r``: an int (not a bool) of at least 1."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


#: The decode head normalises with GroupNorm(32, width), so a head width is a multiple of this.
HEAD_NUM_GROUPS = 32


def check_ham_channels(value: Any) -> int:
    """``value`` if it can be a decode-head width (a positive multiple of 32), else a ``ValueError``."""
    if not is_positive_int(value) or value % HEAD_NUM_GROUPS:
        raise ValueError(f"ham_channels must be a positive multiple of {HEAD_NUM_GROUPS} (the head's GroupNorm "
                         f"groups), got {value!r}")
    return value


def check_positive_int(name: str, value: Any) -> int:
    """``value`` if :func:`is_positive_int`, else a ``ValueError`` naming ``name``."""
    if not is_positive_int(value):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_md_r(md_r: Any, ham_channels: int) -> int:
    """``md_r`` if it is a positive int no larger than the head's width ``ham_channels`` (the
    NMF factors a ``channels x pixels`` matrix: a rank beyond ``channels`` only asks for
    memory, and a file saying 10^6 would ask for gigabytes), else a ``ValueError`` naming
    the field."""
    check_positive_int("md_r", md_r)
    if md_r > ham_channels:
        raise ValueError(f"md_r {md_r} is more than the head's {ham_channels} channels")
    return md_r
