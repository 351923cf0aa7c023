"""The code blocks of README.md and docs/*.md, found and run the way a reader would run them.

A fenced block tagged ``python`` runs in one Python process per file (blocks share one
namespace, in document order, as a reader pasting them into one session would); a block
tagged ``sh``/``bash`` runs in ``bash -e`` from that same process, in the same folder, so a
Python block can use a file a shell block wrote. A block preceded by the comment
``<!-- no-run: REASON -->`` (the nearest non-blank line above its fence) is not run; the test
lists every such block with its reason. Blocks of other languages (``text``, ``yaml``, none)
are illustrations and are never run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNABLE = {"python": "python", "py": "python", "sh": "sh", "bash": "sh", "shell": "sh"}
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)\s*$")
_NO_RUN = re.compile(r"^\s*<!--\s*no-run:\s*(?P<reason>.*?)\s*-->\s*$")
# Where the test collects the blocks it did not run, for the terminal summary (tests/conftest.py).
NOT_RUN_KEY = pytest.StashKey[dict]()


@dataclass(frozen=True)
class Block:
    file: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str  # "python" or "sh" for runnable ones, else the fence's tag
    code: str
    no_run: Optional[str] = None  # the reason, when marked

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.lang in ("python", "sh") and self.no_run is None


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, with its language normalised and its no-run reason."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = path.relative_to(ROOT).as_posix()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        body, j = [], i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if closing and closing["fence"].startswith(fence[0]) and len(closing["fence"]) >= len(fence) \
                    and not closing["lang"]:
                break
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        above = i - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        marker = _NO_RUN.match(lines[above]) if above >= 0 else None
        lang = opening["lang"].lower()
        found.append(Block(rel, i + 1, RUNNABLE.get(lang, lang), "\n".join(body) + "\n",
                           marker["reason"] if marker else None))
        i = j + 1
    return found


# The runner executes in the child process: one namespace for every Python block, bash for
# shell blocks, a line per block with its time, and the failing block named on failure.
RUNNER = r'''
import json, subprocess, sys, time, traceback, warnings
warnings.simplefilter("error", UserWarning)   # a snippet that warns misleads its reader
namespace = {"__name__": "__main__"}
for block in json.load(open(sys.argv[1], encoding="utf-8")):
    started = time.perf_counter()
    print(f"::block {block['where']} ({block['lang']})", flush=True)
    try:
        if block["lang"] == "python":
            exec(compile(block["code"], block["where"], "exec"), namespace)
        else:
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block["code"]])
            if done.returncode:
                raise SystemExit(f"shell block exited {done.returncode}")
    except BaseException as err:
        traceback.print_exc()
        print(f"::failed {block['where']}: {type(err).__name__}: {err}", flush=True)
        sys.exit(1)
    print(f"::ok {block['where']} {time.perf_counter() - started:.1f} s", flush=True)
'''
