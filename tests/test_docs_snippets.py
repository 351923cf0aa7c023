"""Every runnable code block of README.md and docs/*.md runs as written, offline.

Evidence of the reader's kind: the blocks are extracted from the markdown as published and
run in a fresh process per file (tests/helpers/doc_snippets.py), from a folder holding what a
reader has after `make demo` and the files the docs name (photo.jpg, an official and a Jittor
checkpoint, a tiny ADE20K folder, a fine-tuning folder), with ``SEGNEXT_HUB_OFFLINE=1`` and a
cache in which registry names resolve: it was filled once per session from a loopback mirror
serving generated checkpoints with random weights (as `make demo` does without internet).
A stale snippet -- a renamed function, a wrong comment on a shape, a warning, a placeholder --
fails here. Blocks marked ``<!-- no-run: REASON -->`` (network, GPU, long jobs) are listed,
with their reasons, in the terminal summary.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segnext_hub.hub.registry import get_artifact
from tests.helpers.doc_snippets import NOT_RUN_KEY, ROOT, RUNNER, blocks, doc_files
from tests.helpers.http_server import LoopbackServer
from tests.helpers.mirror import Mirror, checkpoint_bytes

# Registry names the docs use, cached before the blocks run (all SegNeXt-T: small and quick).
CACHED = ("mscan-t", "mscan-t-in1k", "mscan-t-ade20k-official")
# Repository entries the blocks may name by relative path (examples/finetune.py, hubconf.py ...).
REPO_ENTRIES = ("examples", "benchmarks", "segnext_hub", "key_maps", "hubconf.py", "docs", "pyproject.toml")
FILES = doc_files()


def _write_folder(root: Path, images: str, labels: str, sizes, classes: int, rng) -> None:
    (root / images).mkdir(parents=True)
    (root / labels).mkdir(parents=True)
    for i, (h, w) in enumerate(sizes):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / images / f"img_{i:04d}.jpg")
        Image.fromarray(rng.integers(0, classes, (h, w)).astype(np.uint8)).save(root / labels / f"img_{i:04d}.png")


@pytest.fixture(scope="session")
def docs_workspace(tmp_path_factory) -> Path:
    """What the blocks find in their working folder (copied, hard-linked, per doc file)."""
    base = tmp_path_factory.mktemp("docs-workspace")
    rng = np.random.default_rng(0)
    photo = Image.open(ROOT / "segnext_hub/data/samples/rocket.jpg").convert("RGB").resize((160, 107))
    photo.save(base / "photo.jpg")
    photo.save(base / "img.jpg")
    (base / "photos").mkdir()
    photo.save(base / "photos" / "a.jpg")
    photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(base / "photos" / "b.jpg")
    (base / "segnext_tiny_512x512_ade_160k.pth").write_bytes(checkpoint_bytes(get_artifact("mscan-t-ade20k-official")))
    (base / "segnext_tiny_512x512_ade_160k.pkl").write_bytes(checkpoint_bytes(get_artifact("mscan-t-ade20k-jittor")))
    ade = base / "data" / "ade" / "ADEChallengeData2016"
    _write_folder(ade, "images/validation", "annotations/validation", [(48, 64), (64, 48)], 151, rng)
    _write_folder(base / "data" / "mine", "images", "labels", [(96, 128)] * 4, 3, rng)
    (base / "classes.txt").write_text("background\nroad\nbuilding\n", encoding="utf-8")
    from segnext_hub.hub.pull import pull

    with pytest.MonkeyPatch.context() as mp, LoopbackServer() as server:
        mp.setenv("SEGNEXT_HUB_CACHE", str(base / "cache"))
        mp.setenv("SEGNEXT_HUB_MIRROR", server.base_url)
        mirror = Mirror(server)
        for name in CACHED:
            mirror.serve(name)
            pull(name, progress=False)
    return base


def _prepare(workspace: Path, dest: Path) -> Path:
    """A private copy of the workspace: the cache copied (the troubleshooting page damages a
    cached file in place), the rest hard-linked (every writer replaces files by renaming)."""
    try:
        shutil.copytree(workspace, dest, copy_function=os.link, ignore=shutil.ignore_patterns("cache"))
    except OSError:
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(workspace, dest, ignore=shutil.ignore_patterns("cache"))
    shutil.copytree(workspace / "cache", dest / "cache")
    for entry in REPO_ENTRIES:
        (dest / entry).symlink_to(ROOT / entry)
    return dest


# A block that installs packages must never run: it would change the interpreter running the
# suite. These stand in for the installers on PATH, and a ``pip`` package ahead of the real one
# on PYTHONPATH makes ``python -m pip`` refuse too.
_REFUSE = "#!/bin/sh\necho \"docs test: '$(basename \"$0\")' is not run here; mark the block <!-- no-run: ... -->\" >&2\nexit 97\n"
_REFUSED = ("pip", "pip3", "make", "apt-get", "conda")


def _environment(work: Path) -> dict[str, str]:
    guard = work / ".guard-bin"
    guard.mkdir()
    for name in _REFUSED:
        (guard / name).write_text(_REFUSE)
        (guard / name).chmod(0o755)
    shim = work / ".guard-py" / "pip"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("")
    (shim / "__main__.py").write_text("import sys\nsys.exit(\"docs test: 'python -m pip' is not run here; "
                                      "mark the block <!-- no-run: ... -->\")\n")
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(shim.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               PATH=os.pathsep.join([str(guard), str(Path(sys.executable).parent), env.get("PATH", "")]),
               SEGNEXT_HUB_CACHE=str(work / "cache"), SEGNEXT_HUB_OFFLINE="1", HF_HUB_OFFLINE="1",
               HF_HOME=str(work / "hf-home"), MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    env.pop("SEGNEXT_HUB_MIRROR", None)
    return env


@pytest.mark.parametrize("doc", FILES, ids=[p.relative_to(ROOT).as_posix() for p in FILES])
def test_code_blocks_run_as_written(doc, docs_workspace, tmp_path, request):
    found = blocks(doc)
    not_run = request.config.stash.setdefault(NOT_RUN_KEY, {})
    for block in found:
        if block.no_run is not None and block.lang in ("python", "sh"):
            not_run[block.where] = block.no_run
    runnable = [b for b in found if b.runnable]
    if not runnable:
        pytest.skip(f"{doc.name}: no runnable python/sh block")
    work = _prepare(docs_workspace, tmp_path / "work")
    (work / "blocks.json").write_text(json.dumps([dict(where=b.where, lang=b.lang, code=b.code) for b in runnable]))
    (work / "run_blocks.py").write_text(RUNNER)
    done = subprocess.run([sys.executable, "run_blocks.py", "blocks.json"], cwd=work, env=_environment(work),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    print("\n".join(line for line in done.stdout.splitlines() if line.startswith("::ok")))
    failed = [line for line in done.stdout.splitlines() if line.startswith("::failed")]
    assert done.returncode == 0 and not failed, f"{failed[0] if failed else 'exit ' + str(done.returncode)}\n" \
                                                f"{done.stdout[-6000:]}"


def test_blocks_cannot_install_packages(tmp_path):
    """A block left unmarked that calls pip fails instead of changing the suite's interpreter."""
    work = tmp_path / "work"
    work.mkdir()
    env = _environment(work)
    for command in ("pip install -e .", "pip3 uninstall -y torch", "make demo"):
        done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 97 and "no-run" in done.stderr, command
    done = subprocess.run([sys.executable, "-m", "pip", "--version"], cwd=work, env=env,  # harmless if it ran
                          capture_output=True, text=True)
    assert done.returncode == 1 and "no-run" in done.stderr


def test_blocks_are_found_and_markers_parsed(tmp_path, monkeypatch):
    """The extractor itself: fences (indented too), languages, and the no-run marker."""
    doc = tmp_path / "README.md"
    doc.write_text("x\n<!-- no-run: needs network -->\n\n```sh\npip install x\n```\n\n- item\n\n  ```python\n"
                   "  a = 1\n  ```\n```text\nnot code\n```\n```bash\necho hi\n```\n", encoding="utf-8")
    monkeypatch.setattr("tests.helpers.doc_snippets.ROOT", tmp_path)
    found = blocks(doc)
    assert [(b.lang, b.line, b.no_run, b.runnable) for b in found] == [
        ("sh", 4, "needs network", False), ("python", 10, None, True), ("text", 13, None, False),
        ("sh", 16, None, True)]
    assert found[1].code == "a = 1\n"
