"""segnext-hub pull/list/info/path/verify/rm/log and segnext_hub.load, over a loopback mirror."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import segnext_hub
import segnext_hub.hub.pull as hub_module
from segnext_hub.cli.hub import main as hub_cli
from segnext_hub.hub.cache import artifact_dir, cache_root
from segnext_hub.errors import BadInputError, DownloadError, OfflineError
from segnext_hub.models import MSCAN, SegNeXt
from tests.helpers import factory
from tests.helpers.mirror import checkpoint_bytes, mirror_path


def cli(*args: str):
    result = CliRunner().invoke(hub_cli, list(args))
    return result.exit_code, result.output


def test_pull_converts_caches_and_second_pull_is_offline(mirror):
    art = mirror.serve("mscan-t")
    result = segnext_hub.pull("mscan-t", progress=False)
    folder = result.path
    assert result.downloaded
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "config.json", "manifest.json", "raw"}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["raw_sha256"] == hashlib.sha256((folder / manifest["raw_file"]).read_bytes()).hexdigest()
    # a generated file cannot carry the published hash: a warning, recorded, not fatal
    assert "MISMATCH" in manifest["hash_status"] and manifest["warnings"]
    assert manifest["conversion"]["verification"]["verified"]
    config = json.loads((folder / "config.json").read_text())
    assert (config["variant"], config["num_classes"], config["md_r"], config["dataset"]) == ("t", 150, 16, "ade20k")
    assert manifest["log_file"] and (folder / manifest["log_file"]).is_file()
    gets = mirror.gets(art.url)
    started = time.perf_counter()
    again = segnext_hub.pull("mscan-t", progress=False)
    elapsed = time.perf_counter() - started
    assert not again.downloaded and mirror.gets(art.url) == gets
    assert elapsed < 0.5, elapsed


def test_strict_makes_prefix_mismatch_fatal_and_leaves_nothing(mirror):
    mirror.serve("mscan-t")
    code, out = cli("pull", "--strict", "-q", "mscan-t")
    assert code == 2 and "refusing with --strict" in out
    assert not list(cache_root().rglob("*.pth"))  # neither in the entry nor in a staging folder
    assert hub_module.cached_manifest("mscan-t") is None


def test_force_downloads_again_online_and_reconverts_the_kept_file_offline(mirror, monkeypatch):
    art = mirror.serve("mscan-t")
    segnext_hub.pull("mscan-t", progress=False)
    assert mirror.gets(art.url) == 1
    segnext_hub.pull("mscan-t", progress=False, force=True)
    assert mirror.gets(art.url) == 2
    monkeypatch.setenv("SEGNEXT_HUB_OFFLINE", "1")
    result = segnext_hub.pull("mscan-t", progress=False, force=True)
    assert result.downloaded and mirror.gets(art.url) == 2 and hub_module.cached_manifest("mscan-t")


def test_matching_prefix_and_pinned_sha256(mirror, monkeypatch):
    data = checkpoint_bytes(segnext_hub.hub.registry.get_artifact("mscan-t"))
    digest = hashlib.sha256(data).hexdigest()
    mirror.serve("mscan-t", data)
    real = hub_module.get_artifact
    monkeypatch.setattr(hub_module, "get_artifact", lambda n: dataclasses.replace(real(n), hash_prefix=digest[:8]))
    assert segnext_hub.pull("mscan-t", progress=False).manifest.hash_status == "file-name prefix matched"
    monkeypatch.setattr(hub_module, "get_artifact", lambda n: dataclasses.replace(real(n), sha256="0" * 64))
    with pytest.raises(DownloadError, match="sha256.*the cached copy of mscan-t was left as it was"):
        segnext_hub.pull("mscan-t", progress=False, force=True)
    # the failed repair changed nothing: the earlier entry is still complete and loads
    assert hub_module.cached_manifest("mscan-t").hash_status == "file-name prefix matched"
    segnext_hub.load("mscan-t")


def test_wrong_checkpoint_is_rejected_and_deleted(mirror):
    resnet = factory.jittor_bytes({"conv1.weight": torch.zeros(64, 3, 7, 7).numpy()})
    mirror.serve("mscan-s-in1k", resnet)
    code, out = cli("pull", "-q", "mscan-s-in1k")
    assert code == 2 and "rejected and deleted" in out and "not a SegNeXt" in out
    assert out.count("\n") == 1
    assert not list(cache_root().rglob("*.pth")) and not list(cache_root().rglob("*.pth.partial"))


def test_wrong_size_is_rejected(mirror):
    mirror.serve("mscan-s", checkpoint_bytes(segnext_hub.hub.registry.get_artifact("mscan-t")))
    code, out = cli("pull", "-q", "mscan-s")
    assert code == 2 and "rejected" in out


def test_404_fails_at_once_with_the_url(mirror):
    code, out = cli("pull", "-q", "mscan-b")
    assert code == 2 and "404" in out and "download.openmmlab.com" in out


@pytest.mark.parametrize("name", ["mscan-t-ade20k-official", "mscan-t-in1k-official", "mscan-t-isaid-jittor"])
def test_official_and_jittor_artifacts(mirror, name):
    art = mirror.serve(name)
    result = segnext_hub.pull(name, progress=False)
    assert (result.path / "raw" / art.filename).is_file()  # the registry's name, not the URL's
    model = segnext_hub.load(name)
    assert isinstance(model, MSCAN if art.kind == "backbone" else SegNeXt)
    assert not model.training


def test_offline_mode(mirror, monkeypatch):
    mirror.serve("mscan-t")
    segnext_hub.pull("mscan-t", progress=False)
    for var in ("SEGNEXT_HUB_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
        requests_before = len(mirror.server.requests)
        assert isinstance(segnext_hub.load("mscan-t"), SegNeXt)
        with pytest.raises(OfflineError, match=var):
            segnext_hub.pull("mscan-s")
        code, out = cli("pull", "mscan-s")
        assert code == 2 and "not cached" in out
        assert len(mirror.server.requests) == requests_before
        monkeypatch.delenv(var)


def test_load_matches_the_weights_and_overrides(mirror):
    mirror.serve("mscan-t")
    model = segnext_hub.load("mscan-t")
    folder = artifact_dir("mscan-t")
    saved = load_file(folder / "model.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert segnext_hub.load("mscan-t", md_r=8).decode_head.md_r == 8
    half = segnext_hub.load("mscan-t", dtype=torch.float64)
    assert next(half.parameters()).dtype == torch.float64


def test_load_local_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNEXT_HUB_CACHE", str(tmp_path / "cache"))
    state = factory.mmseg_state("t", seed=4)
    official = factory.write_official(tmp_path / "o.pth", state)
    model = segnext_hub.load(official)  # converted (and verified) on the fly
    assert torch.equal(model.state_dict()["backbone.block1.0.mlp.dwconv.weight"],
                       state["backbone.block1.0.mlp.dwconv.weight"])
    segnext_hub.convert(official, tmp_path / "o.safetensors")
    again = segnext_hub.load(tmp_path / "o.safetensors")
    x = torch.randn(1, 3, 64, 64)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with torch.no_grad():
        assert torch.equal(model(x, generator=g()), again(x, generator=g()))
    with pytest.raises(BadInputError, match="no such file"):
        segnext_hub.load(tmp_path / "missing.safetensors")
    with pytest.raises(BadInputError, match="unknown artifact"):
        segnext_hub.load("mscan-xl")


def test_cli_list_info_path_verify_rm_log(mirror):
    code, out = cli("list")
    assert code == 0 and len(out.strip().splitlines()) == 45 and "mscan-l-isaid-jittor" in out
    mirror.serve("mscan-t")
    result = CliRunner().invoke(hub_cli, ["pull", "-q", "mscan-t"])
    assert result.exit_code == 0 and result.stdout.strip() == str(artifact_dir("mscan-t"))
    assert result.stderr.startswith("warning: mscan-t: sha256")
    code, out = cli("list", "--cached")
    assert code == 0 and "mscan-t " in out and len(out.strip().splitlines()) == 2
    assert cli("path", "mscan-t") == (0, str(artifact_dir("mscan-t")) + "\n")
    code, out = cli("path", "mscan-s")
    assert code == 2 and "not cached" in out
    code, out = cli("info", "mscan-t")
    assert code == 0 and "hash status" in out and "best mIoU 40.0" in out
    code, out = cli("log", "mscan-t", "--json")
    assert code == 0 and json.loads(out)["seed"] == 1234
    assert cli("verify", "mscan-t")[0] == 0
    model_file = artifact_dir("mscan-t") / "model.safetensors"
    data = bytearray(model_file.read_bytes())
    data[-1] ^= 0xFF
    model_file.write_bytes(bytes(data))
    code, out = cli("verify", "mscan-t")
    assert code == 1 and "does not match" in out
    code, out = cli("rm", "mscan-t")
    assert code == 0 and "removed" in out and not artifact_dir("mscan-t").exists()
    code, out = cli("info", "nope")
    assert code == 2 and "unknown artifact" in out


def test_concurrent_pulls_download_once(mirror, tmp_path):
    art = mirror.serve("mscan-t")
    mirror.server.fault(mirror_path(art.url), rate=4_000_000, times=None)  # slow enough to overlap
    env = dict(os.environ)
    script = "import segnext_hub, sys; print(segnext_hub.pull('mscan-t', progress=False).path)"
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outputs]
    assert len({o[0].strip() for o in outputs}) == 1
    full_gets = [r for r in mirror.server.hits(mirror_path(art.url)) if r.range is None]
    assert len(full_gets) == 1
    assert hub_module.verify_cached("mscan-t") == []
