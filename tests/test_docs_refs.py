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


def _exists(module: str) -> bool:
    """Whether ``module``'s file is there, without running it (nor, past the package, its parents)."""
    parts = module.split(".")
    return (ROOT.joinpath(*parts).with_suffix(".py").is_file() or (ROOT.joinpath(*parts) / "__init__.py").is_file())


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name and not module.startswith(err.name) and _exists(module):
                return True  # it exists; an optional dependency (timm, onnx...) is not installed here
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
                                     ("segnext_hub.nowhere.thing", False), ("segnext_hub.timm", True)])
def test_the_resolver_can_fail(ref, ok):
    assert _resolves(ref) is ok
