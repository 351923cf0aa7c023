"""A cache shared by several users and processes: file modes, a real second user, and loads
racing ``rm``/``pull``.

Evidence: real processes only. The second user is a child process that switches to uid/gid
65534 (``subprocess``'s ``user=``/``group=``, so the kernel enforces the permissions); the
races run five interpreters against one cache, fed by a loopback mirror on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from segnext_hub.hub import cache

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _python(code: str, env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=600, **kwargs)


def test_files_dirs_and_locks_follow_the_umask(mirror):
    """Cache files are read-only for everyone the umask lets read them (0444 under umask 002
    or 022, 0440 under 027): they are replaced by renaming a new entry into place, never
    written in place, so a memory-mapped model never sees its file change. Folders and
    locks follow the umask: umask 002 makes them group-writable (0775 / 0664), which is
    what a team cache needs; 022 gives 0755 / 0644."""
    mirror.serve("mscan-t")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    code = "import segnext_hub; segnext_hub.pull('mscan-t', progress=False)"
    for umask, file_bits, dir_bits in ((0o002, 0o444, 0o775), (0o022, 0o444, 0o755), (0o027, 0o440, 0o750)):
        root = cache.cache_root()
        shutil.rmtree(root, ignore_errors=True)
        done = _python(code, env, umask=umask)
        assert done.returncode == 0, done.stderr[-800:]
        folder = root / "mscan-t"
        for name in ("model.safetensors", "config.json", "manifest.json"):
            assert _mode(folder / name) == file_bits, (oct(umask), name, oct(_mode(folder / name)))
        raw = next((folder / "raw").glob("*.pth"))
        assert _mode(raw) == file_bits
        for lock in (root / ".locks").iterdir():
            assert _mode(lock) == 0o666 & ~umask, lock
        for sub in (root, folder, folder / "raw", root / ".locks"):
            assert _mode(sub) == dir_bits, sub


# The child imports as root (this interpreter lives under /root, which uid 65534 may not
# read), then drops to uid/gid 65534 for good: every cache access after that line is
# checked by the kernel against the second user's permissions.
AS_SECOND_USER = """
import json, os, sys
import segnext_hub, segnext_hub.loading, segnext_hub.hub.pull, segnext_hub.hub.download
import segnext_hub.conversion.converter, segnext_hub.conversion.verify, tqdm, requests
from segnext_hub.hub.pull import verify_cached
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
os.umask(0o002)
out = {"uid": os.getuid()}
for step in sys.argv[1:]:
    if step == "load":
        out["loaded"] = type(segnext_hub.load("mscan-t")).__name__
    elif step == "verify":
        out["verify"] = verify_cached("mscan-t")
    elif step == "pull-other":
        out["pulled"] = str(segnext_hub.pull("mscan-t-in1k", progress=False).path)
    elif step == "repair":
        out["repaired"] = segnext_hub.pull("mscan-t", progress=False).downloaded
print(json.dumps(out))
"""


def _checkout_unreadable_by_second_user() -> str:
    """Why uid 65534 cannot read this checkout's package data, or "" when it can.

    The child imports the package as root, but reads data files (key maps, the registry)
    later, as the second user; a checkout under a 0700 folder (``mktemp -d``) hides them.
    """
    probe = [REPO / "key_maps" / "official.yaml", REPO / "segnext_hub" / "data" / "registry.yaml"]
    # Started as root (the interpreter may live under /root), then the same drop as the test's child.
    code = (f"import os, sys\nos.setgroups([])\nos.setgid({NOBODY})\nos.setuid({NOBODY})\n"
            "for p in sys.argv[1:]:\n    open(p, 'rb').close()")
    done = subprocess.run([sys.executable, "-c", code, *map(str, probe)], capture_output=True, text=True,
                          timeout=60)
    return "" if done.returncode == 0 else f"uid {NOBODY} cannot read this checkout ({REPO})"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="a real second user needs root to switch the child to uid 65534")


def _shared_team_folder() -> tuple[Path, Path]:
    """A fresh ``/tmp`` folder (removed by the caller) holding ``team/``: group-owned by the
    second user's group, setgid, so new entries inherit the group (the documented setup)."""
    shared = Path(tempfile.mkdtemp(prefix="segnext-shared-", dir="/tmp"))
    os.chmod(shared, 0o755)
    group = shared / "team"
    group.mkdir()
    os.chown(group, 0, NOBODY)
    os.chmod(group, 0o2775)
    return shared, group


def test_a_second_user_loads_verifies_pulls_and_repairs_in_a_group_shared_cache(mirror):
    """User A (root, umask 002) fills a setgid group folder; user B (uid/gid 65534, umask
    002) loads A's artifact, verifies it, pulls another one and repairs A's damaged file.
    With 0600 files (mkstemp's mode) B's first load fails with PermissionError."""
    if reason := _checkout_unreadable_by_second_user():
        pytest.skip(reason)
    mirror.serve("mscan-t")
    mirror.serve("mscan-t-in1k")
    shared, group = _shared_team_folder()
    try:
        home = shared / "home-b"
        home.mkdir()
        os.chown(home, NOBODY, NOBODY)
        env = dict(os.environ, SEGNEXT_HUB_CACHE=str(group / "cache"), OMP_NUM_THREADS="1",
                   HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), HF_HOME=str(home / "hf"))
        first = _python("import segnext_hub; segnext_hub.pull('mscan-t', progress=False)", env, umask=0o002)
        assert first.returncode == 0, first.stderr[-800:]
        model = group / "cache/mscan-t/model.safetensors"
        assert model.stat().st_uid == 0 and model.stat().st_gid == NOBODY and _mode(model) == 0o444

        second = subprocess.run([sys.executable, "-c", AS_SECOND_USER, "load", "verify", "pull-other"], env=env,
                                cwd=REPO, capture_output=True, text=True, timeout=600)
        assert second.returncode == 0, second.stderr[-800:]
        out = json.loads(second.stdout.strip().splitlines()[-1])
        assert out == {"uid": NOBODY, "loaded": "SegNeXt", "verify": [],
                       "pulled": str(group / "cache/mscan-t-in1k")}
        b_model = group / "cache/mscan-t-in1k/model.safetensors"
        assert b_model.stat().st_uid == NOBODY and _mode(b_model) == 0o444

        # A's file is damaged; B repairs it with a plain pull (the folder is group-writable).
        with open(model, "r+b") as handle:
            handle.truncate(1000)
        repair = subprocess.run([sys.executable, "-c", AS_SECOND_USER, "repair", "load"], env=env, cwd=REPO,
                                capture_output=True, text=True, timeout=600)
        assert repair.returncode == 0, repair.stderr[-800:]
        assert json.loads(repair.stdout.strip().splitlines()[-1])["loaded"] == "SegNeXt"
        assert model.stat().st_uid == NOBODY and model.stat().st_size > 1000
        check = _python("from segnext_hub.hub.pull import verify_cached; print(verify_cached('mscan-t'))", env)
        assert check.stdout.strip() == "[]", check.stderr[-500:]
    finally:
        shutil.rmtree(shared, ignore_errors=True)


LOADER = """
import json, sys
import segnext_hub
from segnext_hub.errors import SegnextHubError
for _ in range(int(sys.argv[1])):
    try:
        segnext_hub.load("mscan-t")
        print(json.dumps(["ok", ""]), flush=True)
    except SegnextHubError as err:
        print(json.dumps(["error", str(err)]), flush=True)
    except BaseException as err:  # a raw error: what this test exists to catch
        print(json.dumps(["raw", f"{type(err).__name__}: {err}"]), flush=True)
"""

REMOVER = """
import os, sys, time
from segnext_hub.hub.cache import remove_artifact
removed = 0
while not os.path.exists(sys.argv[1]):
    removed += remove_artifact("mscan-t")  # waits for a pull in progress, then strikes at once
    time.sleep(0.2)
print(removed)
"""


def test_loads_racing_rm_never_fail_with_a_raw_error(mirror, tmp_path):
    """4 loader processes in a loop while a fifth keeps removing the same artifact (each
    loader pulls it back when it is gone): every load succeeds or says, in one line, that
    the artifact was removed meanwhile. Without the shared lock, loads failed with
    FileNotFoundError and "has no model.safetensors" between the pull and the read."""
    mirror.serve("mscan-t")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = _python("import segnext_hub; segnext_hub.pull('mscan-t', progress=False)", env)
    assert first.returncode == 0, first.stderr[-800:]
    popen = dict(env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop = tmp_path / "stop"
    remover = subprocess.Popen([sys.executable, "-c", REMOVER, str(stop)], **popen)
    loaders = [subprocess.Popen([sys.executable, "-c", LOADER, "8"], **popen) for _ in range(4)]
    outputs = [p.communicate(timeout=900) for p in loaders]
    stop.touch()
    removed_out, removed_err = remover.communicate(timeout=900)
    assert remover.returncode == 0, removed_err[-800:]
    results = []
    for proc, (out, err) in zip(loaders, outputs):
        assert proc.returncode == 0, err[-800:]
        results += [json.loads(line) for line in out.splitlines() if line.startswith("[")]
    assert len(results) == 32
    raw = [message for kind, message in results if kind == "raw"]
    errors = {message for kind, message in results if kind == "error"}
    assert raw == [] and errors <= {"mscan-t was removed while loading; pull it again (segnext-hub pull mscan-t)"}, \
        (raw, errors)
    assert int(removed_out) >= 3 and sum(kind == "ok" for kind, _ in results) >= 4, (removed_out, results)


# The group member (uid 65534) crafts the entry: the edits of tests/hub/hostile_entries.py,
# made with the member's own permissions (cache files are read-only: the manifest is
# replaced by rename in the group-writable folder, as anyone in the group can).
CRAFT_AS_MEMBER = """
import os, sys
from pathlib import Path
from tests.hub.hostile_entries import CASES
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
os.umask(0o002)
CASES[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]))
"""

# The other member (root here: the strongest victim, who may read and delete anything)
# runs the commands the damage message and the README recommend.
VICTIM_COMMANDS = """
import json, sys
from click.testing import CliRunner
from segnext_hub.cli.hub import main
out = {}
for args in (["verify", "mscan-t"], ["info", "mscan-t"], ["pull", "-q", "mscan-t"], ["verify", "mscan-t"],
             ["rm", "mscan-t"]):
    result = CliRunner().invoke(main, args)
    out[" ".join(args) + (" (after repair)" if args == ["verify", "mscan-t"] and out else "")] = [
        result.exit_code, result.stdout, result.stderr]
print(json.dumps(out))
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="a real second user needs root to switch the child to uid 65534")
@pytest.mark.parametrize("case", ["absolute", "dot-dot", "symlink-out", "dev-zero", "fifo-inside", "fifo-outside"])
def test_a_group_members_manifest_edit_cannot_reach_outside_the_entry_for_another_member(mirror, case):
    """Member B (uid 65534) edits an entry of the group-shared cache so that its manifest
    names member A's private file (absolute path, ../), a link to it, /dev/zero or a FIFO.
    A's verify, info, pull and rm (each in a process killed after 120 s: reading the FIFO
    would block, hashing /dev/zero would never end) report the entry DAMAGED, repair and
    remove it, and A's private file is still there, unchanged. Before: pull deleted it."""
    if reason := _checkout_unreadable_by_second_user():
        pytest.skip(reason)
    from tests.hub.hostile_entries import make_outside, outside_intact

    mirror.serve("mscan-t")
    shared, group = _shared_team_folder()
    try:
        private = shared / "home-a"  # A's files: B may not write there, but names them
        make_outside(private)
        env = dict(os.environ, SEGNEXT_HUB_CACHE=str(group / "cache"), OMP_NUM_THREADS="1")
        first = _python("import segnext_hub; segnext_hub.pull('mscan-t', progress=False)", env, umask=0o002)
        assert first.returncode == 0, first.stderr[-800:]
        folder = group / "cache/mscan-t"
        craft = subprocess.run([sys.executable, "-c", CRAFT_AS_MEMBER, case, str(folder), str(private)], env=env,
                               cwd=REPO, capture_output=True, text=True, timeout=120)
        assert craft.returncode == 0, craft.stderr[-800:]
        assert json.loads((folder / "manifest.json").read_text())  # B's edit is in place
        victim = subprocess.run([sys.executable, "-c", VICTIM_COMMANDS], env=env, cwd=REPO, capture_output=True,
                                text=True, timeout=120, umask=0o002)
        assert victim.returncode == 0, victim.stderr[-800:]
        out = json.loads(victim.stdout.strip().splitlines()[-1])
        code, text, errors = out["verify mscan-t"]
        assert (code, text) == (1, "mscan-t: FAILED\n") and "the cached copy is damaged" in errors
        assert "repair it with: segnext-hub pull" in errors
        assert out["info mscan-t"][0] == 0 and "DAMAGED" in out["info mscan-t"][1]
        assert out["pull -q mscan-t"][:2] == [0, f"{folder}\n"]
        assert out["verify mscan-t (after repair)"] == [0, "mscan-t: OK\n", ""]
        assert out["rm mscan-t"][:2] == [0, "mscan-t: removed\n"]
        assert outside_intact(private)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
