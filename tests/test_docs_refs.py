"""Every package path and dotted name the README and docs/ mention exists.

Stale references (a module that moved, a function renamed) are the first thing a reader
trips over; this keeps them honest. Paths are checked on disk, dotted names by import
(the longest importable module prefix, then attributes).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Docstrings, comments and data files cite names too.
SOURCES = [*sorted((ROOT / "segnext_hub").rglob("*.py")), *sorted((ROOT / "segnext_hub" / "data").glob("*.yaml")),
           *sorted((ROOT / "key_maps").glob("*.yaml"))]
_PATH = re.compile(r"\bsegnext_hub/[\w/]+(?:\.py|\.yaml)\b|\bsegnext_hub/[\w/]+/(?=[\s`)])")
_DOTTED = re.compile(r"\bsegnext_hub(?:\.[A-Za-z_]\w*)+")


def _references(pattern: re.Pattern[str], files: list[Path] = DOCS) -> list[tuple[str, str]]:
    found = []
    for doc in files:
        for match in pattern.finditer(doc.read_text(encoding="utf-8")):
            found.append((doc.relative_to(ROOT).as_posix(), match.group(0)))
    return sorted(set(found))


def _module_file(module: str) -> "Path | None":
    base = ROOT / module.replace(".", "/")
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def _defined_in_source(module: str, names: list[str]) -> bool:
    """For a module whose optional dependency (timm, openvino...) is missing here: its file
    exists and defines the first name (the rest cannot be checked without importing it)."""
    origin = _module_file(module)
    if origin is None:
        return False
    if not names:
        return True
    source = origin.read_text(encoding="utf-8")
    return re.search(rf"^(?:def|class)\s+{names[0]}\b|^{names[0]}\s*[:=]", source, re.M) is not None


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name and not err.name.startswith("segnext_hub"):  # an optional extra not installed
                return any(_defined_in_source(".".join(parts[:c]), parts[c:]) for c in range(cut, 0, -1)
                           if _module_file(".".join(parts[:c])))
            continue
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_package_paths_in_docs_and_sources_exist():
    missing = [f"{doc}: {ref}" for doc, ref in _references(_PATH, DOCS + SOURCES) if not (ROOT / ref).exists()]
    assert not missing, missing


def test_dotted_names_in_docs_exist():
    missing = [f"{doc}: {ref}" for doc, ref in _references(_DOTTED) if not _resolves(ref)]
    assert not missing, missing


def test_dotted_names_in_the_package_sources_exist():
    missing = [f"{doc}: {ref}" for doc, ref in _references(_DOTTED, SOURCES) if not _resolves(ref)]
    assert not missing, missing


@pytest.mark.parametrize("ref, ok", [("segnext_hub.loading.load", True), ("segnext_hub.loading.nope", False),
                                     ("segnext_hub.nowhere.thing", False)])
def test_the_resolver_can_fail(ref, ok):
    assert _resolves(ref) is ok
