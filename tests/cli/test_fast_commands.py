"""The commands that need no model answer without importing torch.

Each command runs as a real subprocess -- ``python -m segnext_hub`` and the installed
console scripts -- with ``PYTHONPROFILEIMPORTTIME=1``, so the interpreter itself lists every
module it imports on stderr; the tests assert that torch is not among them. The cached
artifact comes from a real pull over the loopback mirror (tests/conftest.py ``mirror``:
a generated checkpoint served on 127.0.0.1). Evidence: the real CLI and interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from segnext_hub.hub.pull import pull
from segnext_hub.hub.registry import get_artifact, list_artifacts

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
IMPORT_LINE = "import time:"
# How each entry point is started; PYTHONPATH makes the console scripts import this
# checkout (their sys.path starts at the venv's bin/, not here).
ENTRY_POINTS = {
    "python -m segnext_hub": [sys.executable, "-m", "segnext_hub"],
    "segnext-hub": [str(BIN / "segnext-hub")],
}


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str  # without the import-time lines
    imported: set[str]

    @property
    def torch_modules(self) -> list[str]:
        return sorted(m for m in self.imported if m == "torch" or m.startswith("torch."))


def run(command: list[str], *args: str, **env: str) -> Run:
    environ = dict(os.environ, PYTHONPROFILEIMPORTTIME="1", PYTHONPATH=str(REPO), **env)
    proc = subprocess.run([*command, *args], capture_output=True, text=True, env=environ, cwd=REPO, timeout=120)
    imported, stderr = set(), []
    for line in proc.stderr.splitlines(keepends=True):
        if line.startswith(IMPORT_LINE):
            imported.add(line.rsplit("|", 1)[-1].strip())
        else:
            stderr.append(line)
    assert "segnext_hub" in imported, proc.stderr[-2000:]  # the profile really covers the CLI
    return Run(proc.returncode, proc.stdout, "".join(stderr), imported)


def hub(*args: str, entry: str = "python -m segnext_hub", **env: str) -> Run:
    return run(ENTRY_POINTS[entry], *args, **env)


def test_the_import_profile_does_see_torch_when_a_command_needs_it(tmp_path):
    """The detector itself: a command that loads a model must show torch."""
    result = hub("predict", "mscan-t", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o"),
                 SEGNEXT_HUB_OFFLINE="1")
    assert result.code == 2 and result.stderr.count("\n") == 1, result.stderr
    proc = subprocess.run([sys.executable, "-c", "import torch"], env=dict(os.environ, PYTHONPROFILEIMPORTTIME="1"),
                          capture_output=True, text=True)
    assert any(line.rstrip().endswith("| torch") for line in proc.stderr.splitlines())


HELP_ARGS = [["--help"], ["--version"], []] + [
    [command, "--help"] for command in
    ("list", "pull", "info", "path", "verify", "rm", "log", "predict", "eval", "export", "push")]


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("args", HELP_ARGS, ids=lambda a: " ".join(a) or "no-args")
def test_help_and_version_import_no_torch(entry, args):
    result = hub(*args, entry=entry)
    assert result.code in (0, 2), result.stderr  # click exits 2 with usage when no command is given
    assert "Usage:" in result.stdout or "version" in result.stdout or "Usage:" in result.stderr
    assert result.torch_modules == []


@pytest.mark.parametrize("command", [[sys.executable, "-m", "segnext_hub.cli.convert"], [str(BIN / "segnext-convert")]],
                         ids=["python -m segnext_hub.cli.convert", "segnext-convert"])
@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_segnext_convert_help_imports_no_torch(command, flag):
    result = run(command, flag)
    assert result.code == 0, result.stderr
    assert "SRC" in result.stdout or "segnext-convert" in result.stdout
    assert result.torch_modules == []


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_list_prints_every_artifact_with_its_parameter_count_without_torch(entry):
    result = hub("list", "--json", entry=entry)
    assert result.code == 0, result.stderr
    assert result.torch_modules == []
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == [a.name for a in list_artifacts()]
    assert {r["name"]: r["params"] for r in rows}["mscan-l"] == 48_926_550
    table = hub("list", entry=entry)
    assert table.code == 0 and table.torch_modules == []
    assert any(line.startswith("mscan-t ") and " 4.3M " in line for line in table.stdout.splitlines())


@pytest.mark.parametrize("args, code, message", [
    (["info", "mscan-t-ade20k"], 2, "did you mean"),
    (["path", "mscan-t"], 2, "mscan-t is not cached; run: segnext-hub pull mscan-t"),
    (["rm", "mscan-t"], 0, None),
    (["verify", "mscan-t"], 2, "mscan-t is not cached; run: segnext-hub pull mscan-t"),  # as `path`
    (["pull", "mscan-t"], 2, "SEGNEXT_HUB_OFFLINE"),
    (["log", "mscan-t"], 2, "SEGNEXT_HUB_OFFLINE"),
])
def test_uncached_answers_and_errors_are_one_line_without_torch(args, code, message):
    result = hub(*args, SEGNEXT_HUB_OFFLINE="1")
    assert result.code == code, result.stderr
    assert result.torch_modules == []
    if message:
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    else:
        assert result.stderr == ""


def test_info_of_an_uncached_artifact_imports_no_torch():
    result = hub("info", "mscan-b-cityscapes-official", "--json")
    assert result.code == 0 and result.torch_modules == []
    data = json.loads(result.stdout)
    assert data["cached"] is False and data["artifact"]["params"] == get_artifact("mscan-b-cityscapes-official").params


def test_cached_artifact_commands_import_no_torch(mirror):
    art = mirror.serve("mscan-t")
    pulled = pull("mscan-t", progress=False)  # in this process: the real download + conversion
    gets = mirror.gets(art.url)
    for entry in sorted(ENTRY_POINTS):
        again = hub("pull", "-q", "mscan-t", entry=entry)
        assert (again.code, again.stdout.strip()) == (0, str(pulled.path)), again.stderr
        assert again.torch_modules == [], f"{entry} pull (cached): {again.torch_modules[:3]}"
        log_file = str(pulled.path / pulled.manifest.log_file)
        for args in (["list", "--cached"], ["info", "mscan-t"], ["path", "mscan-t"], ["verify"],
                     ["verify", "mscan-t"], ["log", "mscan-t"], ["log", log_file]):
            result = hub(*args, entry=entry)
            assert result.code == 0, f"{entry} {args}: {result.stderr}"
            assert result.torch_modules == [], f"{entry} {args}: {result.torch_modules[:3]}"
        assert mirror.gets(art.url) == gets  # nothing was downloaded again
    assert hub("list", "--cached").stdout.count("\n") == 2  # header + mscan-t
    assert hub("path", "mscan-t").stdout.strip() == str(pulled.path)
    assert "best mIoU" in hub("info", "mscan-t").stdout

    model = pulled.path / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    tampered = hub("verify", "mscan-t")
    assert tampered.code == 1 and tampered.torch_modules == []
    assert tampered.stdout.strip() == "mscan-t: FAILED"
    assert tampered.stderr.count("\n") == 1 and "does not match its recorded sha256" in tampered.stderr

    removed = hub("rm", "mscan-t", entry="segnext-hub")
    assert (removed.code, removed.stdout.strip()) == (0, "mscan-t: removed")
    assert removed.torch_modules == []
    assert hub("path", "mscan-t").code == 2
