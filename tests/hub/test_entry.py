"""The cache entry owns its files: crafted manifests cannot make a command reach outside it,
and a repair never destroys a working entry.

Evidence: real commands (the click CLI in-process, ``segnext_hub.load``/``pull``) over a
loopback mirror on 127.0.0.1, against entries edited the way a member of a group-shared
cache could edit them (tests/hub/hostile_entries.py). A command that opened the FIFO
outside the cache would block, and one that hashed /dev/zero would never end: every
command runs under a 60 s alarm, so either is a failure, not a hang.
"""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

import segnext_hub
from segnext_hub.cli.hub import main as hub_cli
from segnext_hub.errors import DamagedEntryError, DownloadError
from segnext_hub.hub.cache import artifact_dir, cache_root
from segnext_hub.hub.entry import CacheEntry
from segnext_hub.hub.manifest import Manifest
from tests.hub import hostile_entries
from tests.hub.hostile_entries import CASES, make_outside, outside_intact

# A manifest naming a file outside the entry is damaged as a whole; a link in place of the
# weights (or of the entry) is damage a load reads.
LOAD_REFUSES = {"absolute", "dot-dot", "raw-file-out", "weights-link", "entry-is-a-link"}
DATA = Path(__file__).resolve().parents[1] / "data" / "manifests"


@contextlib.contextmanager
def deadline(seconds: int = 60):
    def expired(signum, frame):
        raise TimeoutError(f"a command ran for {seconds} s (it read a FIFO or /dev/zero)")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def cli(*args: str):
    with deadline():
        result = CliRunner().invoke(hub_cli, list(args))
    assert not isinstance(result.exception, TimeoutError), (args, result.exception)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    make_outside(folder)
    return folder


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_crafted_manifest_cannot_make_verify_info_load_pull_log_or_rm_reach_outside(mirror, outside, case):
    """verify and info call the entry DAMAGED with the reason and the repair command, load
    refuses it in one line, pull repairs it (a new entry from the mirror), log and rm work;
    the private file outside is never deleted, the FIFO and /dev/zero never read."""
    mirror.serve("mscan-t")
    folder = segnext_hub.pull("mscan-t", progress=False).path

    CASES[case](folder, outside)
    code, out, err = cli("verify", "mscan-t")
    assert code == 1 and "mscan-t: FAILED" in out, (out, err)
    lines = err.splitlines()  # one line per damaged file
    assert lines and all(line.startswith("error: mscan-t: the cached copy is damaged: ") and
                         "repair it with: segnext-hub pull" in line for line in lines), err
    code, out, err = cli("info", "mscan-t")
    assert code == 0 and "DAMAGED" in out, (out, err)
    with deadline():  # a load reads the weights and config.json only: damage elsewhere does not stop it
        try:
            segnext_hub.load("mscan-t")
            refused = ""
        except DamagedEntryError as err:
            refused = str(err)
    assert bool(refused) == (case in LOAD_REFUSES) and ("repair it with: segnext-hub pull" in refused or not refused)
    assert outside_intact(outside)

    code, out, err = cli("pull", "-q", "mscan-t")
    assert code == 0 and out.strip() == str(folder), (out, err)
    assert cli("verify", "mscan-t")[:2] == (0, "mscan-t: OK\n")
    assert outside_intact(outside)

    CASES[case](folder, outside)
    code, out, err = cli("log", "mscan-t")
    assert code == 0 and "mIoU" in out, (out, err)
    CASES[case](folder, outside)
    code, out, err = cli("rm", "mscan-t")
    assert code == 0 and "removed" in out, (out, err)
    assert not folder.exists() and not folder.is_symlink()
    assert outside_intact(outside)
    assert not [p for p in cache_root().iterdir() if p.name.startswith(".trash-")]


def test_pull_force_with_the_mirror_unreachable_keeps_a_working_entry(mirror, monkeypatch):
    """Before: --force deleted the download and the manifest first, then failed: the model
    was gone and could not be pulled again offline. Now the replacement is built beside the
    old entry, so the failure leaves it as it was, loadable, and says so in one line."""
    mirror.serve("mscan-t")
    folder = segnext_hub.pull("mscan-t", progress=False).path
    before = {p.name: p.stat().st_mtime_ns for p in folder.rglob("*")}
    monkeypatch.setenv("SEGNEXT_HUB_MIRROR", "http://127.0.0.1:9")  # nothing listens on the discard port
    code, out, err = cli("pull", "-q", "--force", "mscan-t")
    assert code == 2 and err.count("\n") == 1, err
    assert "the cached copy of mscan-t was left as it was" in err
    assert {p.name: p.stat().st_mtime_ns for p in folder.rglob("*")} == before
    assert cli("verify", "mscan-t")[:2] == (0, "mscan-t: OK\n")
    segnext_hub.load("mscan-t")
    monkeypatch.setenv("SEGNEXT_HUB_OFFLINE", "1")  # and offline, --force converts the kept download again
    assert segnext_hub.pull("mscan-t", progress=False, force=True).downloaded
    segnext_hub.load("mscan-t")


def test_a_failed_repair_of_a_damaged_entry_deletes_nothing(mirror, monkeypatch):
    """A damaged entry whose repair cannot download keeps every file it had (verify still
    names the damage; nothing was half-deleted)."""
    art = mirror.serve("mscan-t")
    folder = segnext_hub.pull("mscan-t", progress=False).path
    raw = folder / "raw" / art.filename
    raw.chmod(0o644)
    data = bytearray(raw.read_bytes())
    data[100] ^= 0xFF
    raw.write_bytes(bytes(data))
    names = sorted(p.name for p in folder.rglob("*"))
    monkeypatch.setenv("SEGNEXT_HUB_MIRROR", "http://127.0.0.1:9")
    with pytest.raises(DownloadError, match="left as it was"):
        segnext_hub.pull("mscan-t", progress=False, force=True)
    assert sorted(p.name for p in folder.rglob("*")) == names
    segnext_hub.load("mscan-t")  # the weights were never the damaged part


def test_a_deeply_nested_training_log_never_fails_pull(mirror):
    """A log of 100 000 nested brackets makes json.loads raise RecursionError. pull records
    it as a log problem; info and log say so in one line; a later pull --force through a
    mirror serving a good log records no problem."""
    deep = b"[" * 100_000 + b"]" * 100_000
    hostile = b'{"env_info": "x", "seed": 1, "config": ' + deep + b"}\n" + deep + b"\n"
    mirror.serve("mscan-t", log=hostile)
    result = segnext_hub.pull("mscan-t", progress=False)
    assert result.downloaded
    code, out, err = cli("info", "mscan-t")
    assert code == 0 and "cached" in out, (out, err)
    code, out, err = cli("log", "mscan-t")
    assert code == 2 and err.count("\n") == 1 and "no training-log records" in err, err
    result = segnext_hub.pull("mscan-t", progress=False, force=True)  # the same hostile log again
    assert result.downloaded
    mirror.serve("mscan-t")  # a good log now
    result = segnext_hub.pull("mscan-t", progress=False, force=True)
    assert result.manifest.log_error is None and cli("log", "mscan-t")[0] == 0


def test_cache_files_are_read_only_and_replaced_by_rename(mirror):
    """Every file of an entry is written without write bits, and a repair puts new inodes
    in place (renamed in), so a model mapped from the old file keeps its bytes."""
    mirror.serve("mscan-t")
    folder = segnext_hub.pull("mscan-t", progress=False).path
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert files and all(p.stat().st_mode & 0o222 == 0 for p in files), [oct(p.stat().st_mode) for p in files]
    model = segnext_hub.load("mscan-t")
    weight = next(iter(model.state_dict().values())).clone()
    inode = (folder / "model.safetensors").stat().st_ino
    segnext_hub.pull("mscan-t", progress=False, force=True, )
    assert (folder / "model.safetensors").stat().st_ino != inode
    assert next(iter(model.state_dict().values())).equal(weight)


def test_every_manifest_version_written_so_far_is_read():
    """Fixtures written by earlier releases (tests/data/manifests/README.md)."""
    v2 = Manifest.from_json(json.loads((DATA / "manifest_v2_mscan-t.json").read_text()), "mscan-t")
    assert v2.complete and v2.log_file in v2.files and v2.raw_file in v2.files
    assert v2.verification["verified"] is True and v2.files["model.safetensors"].size > 0
    v1 = Manifest.from_json(json.loads((DATA / "manifest_v1_mscan-t.json").read_text()), "mscan-t")
    assert set(v1.files) == {v2.raw_file, "model.safetensors"} and v1.files["model.safetensors"].size is None
    assert v1.files[v2.raw_file] == v2.files[v2.raw_file]
    backbone = Manifest.from_json(json.loads((DATA / "manifest_v2_mscan-t-in1k.json").read_text()), "mscan-t-in1k")
    assert backbone.log_file is None and backbone.to_json()["files"] == json.loads(
        (DATA / "manifest_v2_mscan-t-in1k.json").read_text())["files"]


def test_a_version_1_entry_still_loads_and_verifies(mirror):
    mirror.serve("mscan-t")
    folder = segnext_hub.pull("mscan-t", progress=False).path
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.pop("files")
    manifest["manifest_version"] = 1
    (folder / "manifest.json").chmod(0o644)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert CacheEntry("mscan-t").verify() == []
    segnext_hub.load("mscan-t")


@pytest.mark.parametrize("name, why", [
    ("/etc/passwd", "absolute path"), ("../x", "leaves the entry"), ("raw/../../x", "leaves the entry"),
    ("a//b", "empty part"), ("a\\b", "not a plain file name"), ("a\x1b[2Jb", "not a plain file name"),
])
def test_manifest_names_must_be_plain_relative_names(name, why):
    data = json.loads((DATA / "manifest_v2_mscan-t.json").read_text())
    data["files"][name] = {"size": 1, "sha256": None}
    with pytest.raises(ValueError, match=why):
        Manifest.from_json(data, "mscan-t")


def test_hostile_cases_cover_the_issue():
    assert {"absolute", "dot-dot", "symlink-out", "dev-zero", "fifo-inside"} <= set(hostile_entries.CASES)
    assert artifact_dir("mscan-t").name == "mscan-t"
