"""Cache location, artifact folders, manifests, offline switch, locks."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from segnext_hub.errors import BadInputError
from segnext_hub.hub import cache
from segnext_hub.hub.hf import hf_hub_cache

CACHE_VARS = ("SEGNEXT_HUB_CACHE", "HF_ASSETS_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HF_HUB_CACHE",
              "HUGGINGFACE_HUB_CACHE", "HUGGINGFACE_ASSETS_CACHE", "SEGNEXT_HUB_OFFLINE", "HF_HUB_OFFLINE")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for var in CACHE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def root(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("SEGNEXT_HUB_CACHE", str(tmp_path / "c"))
    return tmp_path / "c"


# -- where the cache is ---------------------------------------------------------------------


def test_default_is_under_the_hf_assets_cache_in_home(tmp_path):
    assert cache.cache_root() == tmp_path / "home/.cache/huggingface/assets/segnext_hub"


def test_segnext_hub_cache_wins_and_is_read_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ASSETS_CACHE", str(tmp_path / "assets"))
    monkeypatch.setenv("SEGNEXT_HUB_CACHE", str(tmp_path / "mine"))
    assert cache.cache_root() == tmp_path / "mine"
    monkeypatch.setenv("SEGNEXT_HUB_CACHE", "~/x")
    assert cache.cache_root() == tmp_path / "home/x"


def test_hf_assets_cache_beats_hf_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert cache.cache_root() == tmp_path / "hf/assets/segnext_hub"
    monkeypatch.setenv("HF_ASSETS_CACHE", str(tmp_path / "assets"))
    assert cache.cache_root() == tmp_path / "assets/segnext_hub"


def test_xdg_cache_home_and_empty_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HOME", "")
    monkeypatch.setenv("SEGNEXT_HUB_CACHE", "")
    assert cache.cache_root() == tmp_path / "xdg/huggingface/assets/segnext_hub"


def test_agrees_with_huggingface_hub(tmp_path):
    """Same assets and hub folders as the installed huggingface_hub's own constants module
    (reloaded in a subprocess per environment), for each way of configuring them: our
    chains are plain environment reads, so this is what keeps them honest."""
    script = (
        "import importlib, json, os, sys\n"
        "import huggingface_hub.constants as c\n"
        "out = []\n"
        "for env in json.loads(sys.argv[1]):\n"
        "    for k in sys.argv[2].split(','): os.environ.pop(k, None)\n"
        "    os.environ.update(env)\n"
        "    importlib.reload(c)\n"
        "    out.append([os.path.abspath(c.HF_ASSETS_CACHE), os.path.abspath(c.HF_HUB_CACHE)])\n"
        "print(json.dumps(out))\n"
    )
    envs = [
        {},
        {"HF_HOME": str(tmp_path / "hf")},
        {"XDG_CACHE_HOME": str(tmp_path / "xdg")},
        {"HF_HOME": str(tmp_path / "hf"), "HF_ASSETS_CACHE": str(tmp_path / "assets")},
        {"HUGGINGFACE_ASSETS_CACHE": str(tmp_path / "legacy-a"), "HUGGINGFACE_HUB_CACHE": str(tmp_path / "legacy-h")},
        {"HUGGINGFACE_HUB_CACHE": str(tmp_path / "legacy-h"), "HF_HUB_CACHE": str(tmp_path / "new-h")},
        {"BIG": str(tmp_path / "big"), "HF_HOME": "$BIG/hf", "XDG_CACHE_HOME": str(tmp_path / "xdg")},
        {"HF_HOME": "~/hfhome"},
        {"XDG_CACHE_HOME": "~/xdg", "HF_ASSETS_CACHE": "~/a"},
    ]
    names = ",".join(sorted({*CACHE_VARS, "BIG"}))
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARS}
    out = subprocess.run([sys.executable, "-c", script, json.dumps(envs), names], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    theirs = json.loads(out)
    ours = []
    for extra in envs:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in extra.items():
                mp.setenv(key, value)
            paths = cache.hf_paths()
            ours.append([str(paths.assets_cache), str(paths.hub_cache)])
    assert ours == theirs


def test_hf_variables_are_expanded_like_huggingface_hub_does(monkeypatch, tmp_path):
    """``$VAR`` in HF_HOME is expanded (os.path.expandvars in huggingface_hub.constants); the
    old hand-written resolution left ``$BIG`` in the path. Self-written environment."""
    monkeypatch.setenv("BIG", str(tmp_path / "disk"))
    monkeypatch.setenv("HF_HOME", "$BIG/hf")
    assert cache.cache_root() == tmp_path / "disk/hf/assets/segnext_hub"
    assert hf_hub_cache() == tmp_path / "disk/hf/hub"


def test_legacy_huggingface_variables_and_call_time_reading(monkeypatch, tmp_path):
    """HUGGINGFACE_ASSETS_CACHE (huggingface_hub's legacy name) counts, HF_ASSETS_CACHE beats
    it, and every change is seen at once although huggingface_hub.constants is frozen."""
    import huggingface_hub.constants as frozen  # imported (frozen) before the changes below

    monkeypatch.setenv("HUGGINGFACE_ASSETS_CACHE", str(tmp_path / "legacy"))
    assert cache.cache_root() == tmp_path / "legacy/segnext_hub"
    monkeypatch.setenv("HF_ASSETS_CACHE", str(tmp_path / "new"))
    assert cache.cache_root() == tmp_path / "new/segnext_hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "old-hub"))
    assert hf_hub_cache() == tmp_path / "old-hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hf_hub_cache() == tmp_path / "hub"
    assert frozen.HF_HUB_CACHE != str(tmp_path / "hub")  # the module itself stays as imported


# -- artifact folders -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mscan-t", "mscan-l-cityscapes-official", "mscan-b-isaid-jittor",
                                  "segnext_mscan-t_1x16.v2", "a"])
def test_artifact_dir_is_one_level_below_the_root(root, name):
    assert cache.artifact_dir(name) == root / name
    assert not (root / name).exists()  # looking up never creates


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "x/../y", "a/b", "a\\b", "/abs", "a..b",
                                  ".hidden", "-rf", "a b", "a\x00b", "x" * 201, None])
def test_bad_artifact_names_are_rejected(root, name):
    with pytest.raises(BadInputError, match="invalid artifact name"):
        cache.artifact_dir(name)
    with pytest.raises(BadInputError):
        cache.write_manifest(name, {"a": 1})
    assert not root.exists()


# -- offline --------------------------------------------------------------------------------


@pytest.mark.parametrize("var", ["SEGNEXT_HUB_OFFLINE", "HF_HUB_OFFLINE"])
@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on", " On "])
def test_offline_truthy(monkeypatch, var, value):
    assert cache.is_offline() is False
    monkeypatch.setenv(var, value)
    assert cache.is_offline() is True
    assert cache.offline_variable() == var


@pytest.mark.parametrize("value", ["0", "", "false", "no", "off", "2"])
def test_offline_falsy(monkeypatch, value):
    monkeypatch.setenv("SEGNEXT_HUB_OFFLINE", value)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert cache.is_offline() is False and cache.offline_variable() is None


# -- manifests ------------------------------------------------------------------------------


def test_manifest_round_trip(root):
    assert cache.read_manifest("mscan-t") is None
    data = {"name": "mscan-t", "sha256": "ab" * 32, "size": 17, "files": ["model.safetensors"],
            "hash_status": {"suffix": "05bd8466", "match": False}, "note": "ünïcode"}
    cache.write_manifest("mscan-t", data)
    assert cache.read_manifest("mscan-t") == data
    assert json.loads((root / "mscan-t/manifest.json").read_text("utf-8")) == data
    cache.write_manifest("mscan-t", {"v": 2})
    assert cache.read_manifest("mscan-t") == {"v": 2}
    assert sorted(p.name for p in (root / "mscan-t").iterdir()) == ["manifest.json"]


def test_manifest_rejects_what_json_cannot_say(root):
    cache.write_manifest("a", {"ok": True})
    with pytest.raises(ValueError):
        cache.write_manifest("a", {"x": float("nan")})
    with pytest.raises(TypeError):
        cache.write_manifest("a", ["not", "a", "dict"])
    assert cache.read_manifest("a") == {"ok": True}


def test_failed_manifest_write_keeps_the_old_one(root, monkeypatch):
    cache.write_manifest("a", {"v": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", broken_replace)
        with pytest.raises(OSError, match="disk full"):
            cache.write_manifest("a", {"v": 2})
    assert cache.read_manifest("a") == {"v": 1}
    assert sorted(p.name for p in (root / "a").iterdir()) == ["manifest.json"]


def test_readers_never_see_a_half_written_manifest(root):
    big = {"keys": [f"backbone.block{i}.weight" for i in range(20000)]}  # ~600 KB
    cache.write_manifest("a", {"v": -1, **big})
    stop = threading.Event()
    seen, errors = [], []

    def writer():
        for v in range(40):
            cache.write_manifest("a", {"v": v, **big})
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unreadable manifest would warn
        while not stop.is_set():
            got = cache.read_manifest("a")
            if got is None or got["keys"] != big["keys"]:
                errors.append(got)
            else:
                seen.append(got["v"])
    thread.join()
    assert errors == [] and len(seen) > 1


def test_hand_edited_manifest_is_damage_named_with_the_repair_command(root):
    (root / "a").mkdir(parents=True)
    (root / "a/manifest.json").write_text("{ not json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one error, not a two-line Python warning
        with pytest.raises(cache.DamagedEntryError) as err:
            cache.read_manifest("a")
    assert "a: the cached copy is damaged: manifest.json is not valid JSON" in str(err.value)
    assert str(err.value).endswith("repair it with: segnext-hub pull a") and "\n" not in str(err.value)
    (root / "a/manifest.json").write_text("[1, 2]")
    with pytest.raises(cache.DamagedEntryError, match="not hold a JSON object"):
        cache.read_manifest("a")


def test_cache_path_that_is_a_file_is_one_clear_error(monkeypatch, tmp_path):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("SEGNEXT_HUB_CACHE", str(tmp_path / "f"))
    with pytest.raises(BadInputError, match="is a file, not a folder; point SEGNEXT_HUB_CACHE"):
        cache.artifact_dir("mscan-t")


def test_remove_artifact(root):
    assert cache.remove_artifact("mscan-t") is False
    cache.write_manifest("mscan-t", {"v": 1})
    (root / "mscan-t/model.safetensors").write_bytes(b"x" * 1000)
    cache.write_manifest("mscan-s", {"v": 1})
    assert cache.remove_artifact("mscan-t") is True
    assert sorted(p.name for p in root.iterdir()) == [".locks", "mscan-s"]  # no trash left behind
    assert cache.read_manifest("mscan-t") is None and cache.read_manifest("mscan-s") == {"v": 1}
    assert cache.remove_artifact("mscan-t") is False


# -- locks ----------------------------------------------------------------------------------


def _try_lock(path: Path) -> bool:
    """Whether an independent open of ``path`` can take the lock right now."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_artifact_lock_excludes_others_until_released(root):
    with cache.artifact_lock("mscan-t") as folder:
        assert folder == root / "mscan-t" and folder.is_dir()
        assert _try_lock(root / ".locks/mscan-t.pull.lock") is False
    assert _try_lock(root / ".locks/mscan-t.pull.lock") is True


def test_use_lock_is_shared_between_readers_and_excludes_rm(root):
    """Evidence: real flock calls on the lock file from independent opens."""
    path = root / ".locks/mscan-t.use.lock"
    with cache.use_lock("mscan-t"):
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a second reader gets in
        finally:
            os.close(fd)
        assert _try_lock(path) is False  # a remover does not
    with cache.use_lock("mscan-t", shared=False):
        assert _try_lock(path) is False
    assert _try_lock(path) is True


def test_file_lock_waits_for_the_holder(tmp_path):
    lock = tmp_path / "x.lock"
    order = []
    holding = threading.Event()

    def holder():
        with cache.file_lock(lock):
            order.append("holder in")
            holding.set()
            time.sleep(0.2)
            order.append("holder out")

    def waiter():
        with cache.file_lock(lock):
            order.append("waiter in")

    threads = [threading.Thread(target=fn, daemon=True) for fn in (holder, waiter)]
    threads[0].start()
    assert holding.wait(5)
    threads[1].start()
    for thread in threads:
        thread.join(timeout=5)
    assert not any(t.is_alive() for t in threads), "lock never released"
    assert order == ["holder in", "holder out", "waiter in"]


def test_remove_waits_for_a_pull_holding_the_artifact_lock(root):
    cache.write_manifest("mscan-t", {"v": 1})
    events = []
    holding = threading.Event()

    def pull():
        with cache.artifact_lock("mscan-t") as folder:
            holding.set()
            time.sleep(0.2)
            (folder / "model.safetensors").write_bytes(b"w")
            events.append("pull done")

    def remove():
        events.append(("removed", cache.remove_artifact("mscan-t")))

    puller = threading.Thread(target=pull, daemon=True)
    puller.start()
    assert holding.wait(5)
    remover = threading.Thread(target=remove, daemon=True)
    remover.start()
    for thread in (puller, remover):
        thread.join(timeout=5)
    assert events == ["pull done", ("removed", True)]
    assert not (root / "mscan-t").exists() and [p.name for p in root.iterdir()] == [".locks"]


# -- damage: reported with the file and the repair command, repaired by pull --------------
# Evidence: real pulls from a loopback mirror, files damaged on disk, commands run through
# click's runner (same code path as the console script).


def _cli(*args: str):
    from click.testing import CliRunner

    from segnext_hub.cli.hub import main

    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_truncated_weights_are_named_by_load_info_list_and_repaired_by_pull(mirror):
    import segnext_hub
    from segnext_hub.hub.pull import cached_manifest

    art = mirror.serve("mscan-t")
    folder = segnext_hub.pull("mscan-t", progress=False).path
    manifest = cached_manifest("mscan-t")
    assert set(manifest.files) == {f"raw/{art.filename}", "model.safetensors", "config.json", manifest.log_file}
    assert all(rec.size and rec.sha256 for rec in manifest.files.values())
    size = (folder / "model.safetensors").stat().st_size
    with open(folder / "model.safetensors", "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(cache.DamagedEntryError) as err:
        segnext_hub.load("mscan-t")
    assert str(err.value) == (f"mscan-t: the cached copy is damaged: model.safetensors has 1000 bytes, the "
                              f"manifest records {size}; repair it with: segnext-hub pull mscan-t")
    code, out, _ = _cli("info", "mscan-t")
    assert code == 0 and "DAMAGED: mscan-t: the cached copy is damaged: model.safetensors" in out
    code, out, _ = _cli("list", "--cached")
    assert code == 0 and "DAMAGED" in out
    code, out, err_text = _cli("predict", "mscan-t", "x.jpg", "-o", str(folder.parent / "out"))
    assert code == 1 and err_text.count("\n") == 1 and "repair it with: segnext-hub pull mscan-t" in err_text
    gets = mirror.gets(art.url)
    code, out, _ = _cli("pull", "-q", "mscan-t")
    assert code == 0 and mirror.gets(art.url) == gets  # the intact download was kept
    assert (folder / "model.safetensors").stat().st_size == size
    assert _cli("verify", "mscan-t")[:2] == (0, "mscan-t: OK\n")
    segnext_hub.load("mscan-t")


def test_corrupt_config_fails_verify_and_load_and_pull_force_repairs(mirror):
    import segnext_hub

    mirror.serve("mscan-t")
    folder = segnext_hub.pull("mscan-t", progress=False).path
    config = folder / "config.json"
    config.write_bytes(b"{" + b"x" * (config.stat().st_size - 1))  # same size: only the hash tells
    code, out, err = _cli("verify", "mscan-t")
    assert code == 1 and "mscan-t: FAILED" in out
    assert err.strip() == ("error: mscan-t: the cached copy is damaged: config.json does not match its recorded "
                           "sha256 (corrupted or modified); repair it with: segnext-hub pull --force mscan-t")
    with pytest.raises(cache.DamagedEntryError, match=r"config.json is not valid JSON.*pull --force mscan-t"):
        segnext_hub.load("mscan-t")
    assert _cli("pull", "-q", "--force", "mscan-t")[0] == 0
    assert _cli("verify", "mscan-t")[0] == 0


def test_flipped_byte_in_the_download_is_found_by_verify_and_downloaded_again(mirror):
    import segnext_hub

    art = mirror.serve("mscan-t")
    folder = segnext_hub.pull("mscan-t", progress=False).path
    raw = folder / "raw" / art.filename
    data = bytearray(raw.read_bytes())
    data[len(data) // 2] ^= 0xFF
    raw.write_bytes(bytes(data))
    code, _, err = _cli("verify")
    assert code == 1 and f"raw/{art.filename} does not match its recorded sha256" in err
    gets = mirror.gets(art.url)
    assert _cli("pull", "-q", "--force", "mscan-t")[0] == 0
    assert mirror.gets(art.url) == gets + 1 and _cli("verify")[0] == 0


def test_corrupt_manifest_is_named_and_pull_repairs_it(mirror):
    import segnext_hub

    mirror.serve("mscan-t")
    folder = segnext_hub.pull("mscan-t", progress=False).path
    (folder / "manifest.json").write_text('{"complete": tru')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, _, err = _cli("predict", "mscan-t", "x.jpg", "-o", str(folder.parent / "out"))
    assert code == 1 and err == ("error: mscan-t: the cached copy is damaged: manifest.json is not valid JSON "
                                 "(Expecting value, line 1); repair it with: segnext-hub pull mscan-t\n")
    assert _cli("verify", "mscan-t")[0] == 1
    assert _cli("pull", "-q", "mscan-t")[0] == 0 and _cli("verify", "mscan-t")[0] == 0


def test_a_cache_path_that_is_a_file_fails_every_command_in_one_line(monkeypatch, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("SEGNEXT_HUB_CACHE", str(tmp_path / "file"))
    for args in (["verify"], ["pull", "mscan-t"], ["list", "--cached"], ["rm", "mscan-t"], ["info", "mscan-t"]):
        code, _, err = _cli(*args)
        assert code == 2 and err.count("\n") == 1 and "is a file, not a folder" in err, (args, err)
