"""How bytes reach disk: modes, existing destinations, killed writers, full or read-only disks.

Evidence: real files, a real killed process (SIGKILL), a real second user (uid 65534, kernel
permission checks) and a real 4 MiB tmpfs; tests that need root say so when skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from segnext_hub import fileio
from segnext_hub.errors import BadInputError

REPO = Path(__file__).resolve().parents[1]
needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                                reason="needs root (to switch to a second user or mount a tmpfs)")


@pytest.mark.parametrize("umask, bits", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_umasks_mode(tmp_path, umask, bits):
    old = os.umask(umask)
    try:
        assert fileio.current_umask() == umask
        fileio.atomic_write_bytes(tmp_path / "a.bin", b"x")
        folder = fileio.make_temp_dir(tmp_path, ".staging.")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == bits
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask


def test_a_dangling_symlink_counts_as_existing(tmp_path):
    link = tmp_path / "out.safetensors"
    os.symlink(tmp_path / "nowhere", link)
    with pytest.raises(BadInputError, match="already exists as a dangling symlink"):
        fileio.atomic_write_bytes(link, b"x")
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()
    fileio.atomic_write_bytes(link, b"x", force=True)
    assert not link.is_symlink() and link.read_bytes() == b"x"


WRITER = """
import sys, time
from segnext_hub.fileio import atomic_writer
with atomic_writer(sys.argv[1]) as handle:
    handle.write(b"x" * 1000)
    handle.flush()
    print("writing", flush=True)
    time.sleep(600)
"""


def _start_writer(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def test_a_killed_writers_temp_file_is_cleaned_by_the_next_write(tmp_path):
    target = tmp_path / "model.safetensors"
    alive = _start_writer(target)
    killed = _start_writer(target)
    try:
        temps = sorted(tmp_path.glob(".model.safetensors.*.tmp"))
        assert len(temps) == 2
        killed.send_signal(signal.SIGKILL)
        killed.wait(30)
        fileio.atomic_write_bytes(target, b"done")
        left = sorted(tmp_path.glob(".model.safetensors.*.tmp"))
        assert left == [t for t in temps if f".{alive.pid}-" in t.name]  # the live writer's stays
        assert target.read_bytes() == b"done"
    finally:
        alive.kill()
        alive.wait(30)
    assert fileio.clean_stale_temps(tmp_path) == [t for t in temps if f".{alive.pid}-" in t.name]
    assert list(tmp_path.glob(".*.tmp")) == []


def test_only_our_own_temp_names_are_touched(tmp_path):
    """mkstemp-style names of older versions and other suffixes are left alone."""
    target = tmp_path / "x.onnx"
    assert not os.path.exists("/proc/999999")
    for name in (".x.onnx.abc.tmp", ".other.999999-0123abcd.tmp", ".x.onnx.999999-0123abcd.tmpx"):
        (tmp_path / name).write_bytes(b"keep")
    old = tmp_path / ".x.onnx.999999-0123abcd.tmp"
    old.write_bytes(b"stale")
    os.utime(old, (time.time() - 3600,) * 2)
    fileio.atomic_write_bytes(target, b"x")  # pid 999999 is dead: both of its temp files go
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.onnx.999999-0123abcd.tmpx", ".x.onnx.abc.tmp",
                                                          "x.onnx"]


@needs_root
def test_a_read_only_destination_is_named_not_the_temp_file():
    folder = Path(tempfile.mkdtemp(prefix="segnext-ro-", dir="/tmp"))
    try:
        os.chmod(folder, 0o755)  # root's folder: readable, not writable, for uid 65534
        code = ("import os, sys\nfrom segnext_hub import fileio\nfrom segnext_hub.errors import BadInputError\n"
                "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
                "try:\n    fileio.atomic_write_bytes(sys.argv[1], b'x')\n"
                "except BadInputError as err:\n    print(err)\n")
        out = subprocess.run([sys.executable, "-c", code, str(folder / "out.onnx")], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
        assert out.stdout.strip() == f"cannot write {folder}/out.onnx: the folder {folder} is not writable", out.stderr
        assert list(folder.iterdir()) == []
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def tiny_disk():
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) for a 4 MiB tmpfs")
    folder = Path(tempfile.mkdtemp(prefix="segnext-tiny-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip("this container may not mount a tmpfs")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)
    shutil.rmtree(folder, ignore_errors=True)


def test_a_full_disk_is_found_before_writing_and_named(tiny_disk):
    with pytest.raises(BadInputError) as err:
        fileio.atomic_write_bytes(tiny_disk / "big.bin", b"x" * (8 << 20))
    assert str(err.value).startswith(f"cannot write {tiny_disk}/big.bin: needs 8.0 MiB, only")
    assert list(tiny_disk.iterdir()) == []
    with pytest.raises(BadInputError) as err:  # no size known in advance: ENOSPC while writing
        with fileio.atomic_writer(tiny_disk / "stream.bin") as handle:
            for _ in range(8):
                handle.write(b"x" * (1 << 20))
    assert str(err.value) == (f"cannot write {tiny_disk}/stream.bin: No space left on device; "
                              "free some space or choose another folder")
    assert list(tiny_disk.iterdir()) == []


def test_convert_checks_free_space_before_converting(tiny_disk, tmp_path):
    from segnext_hub.cli.convert import main
    from click.testing import CliRunner
    from tests.helpers import factory

    src = factory.write_official(tmp_path / "t.pth", factory.mmseg_state("t"))
    result = CliRunner().invoke(main, [str(src), str(tiny_disk / "t.safetensors")])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: cannot write {tiny_disk}/t.safetensors: needs ")
    assert "report" not in result.stdout and list(tiny_disk.iterdir()) == []
