"""``segnext-hub info PATH`` and ``log`` for the first hour (issue 20, points 2 and 4).

Evidence: checkpoints generated in the containers upstream writes (tests/helpers/factory.py:
MMEngine and mmcv-1.x pickles, JSeg .pkl, segnext-hub's own safetensors), a real pull from a
loopback mirror of the registry URLs, and the CLI through click's runner.
"""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from segnext_hub.cli.hub import main as hub_cli
from segnext_hub.fileio import sha256_file
from tests.helpers import factory
from tests.helpers.mirror import mirror_path


def cli(*args):
    result = CliRunner().invoke(hub_cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


def test_info_of_an_official_checkpoint_describes_it_without_writing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    factory.write_official(tmp_path / "segnext_tiny_ade.pth", factory.mmseg_state("t", num_classes=150), seed=42)
    before = _snapshot(tmp_path)
    code, out, err = cli("info", "segnext_tiny_ade.pth", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert {k: data[k] for k in ("layout", "variant", "kind", "num_classes", "md_r", "training_seed")} == {
        "layout": "official", "variant": "t", "kind": "segmentor", "num_classes": 150, "md_r": 16,
        "training_seed": 42}
    assert "config" in data["md_r_source"] and data["training_seed_source"]
    assert data["registry_artifact"] is None and len(data["classes"]) == 150
    assert _snapshot(tmp_path) == before  # nothing written
    code, out, err = cli("info", "segnext_tiny_ade.pth")
    assert code == 0 and "layout          official" in out and "registry        no registry artifact" in out
    assert "None" not in out


def test_info_of_jittor_and_safetensors_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backbone = factory.mmseg_state("t", backbone_only=True)
    pkl = factory.write_jittor(tmp_path / "mscan_t.pkl", backbone)
    code, out, err = cli("info", pkl, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert (data["layout"], data["kind"], data["variant"], data["num_classes"], data["md_r"]) == (
        "jittor", "backbone", "t", None, None)
    src = factory.write_mmseg(tmp_path / "m.pth", factory.mmseg_state("t", num_classes=19), md_r=16, seed=7)
    from segnext_hub import convert

    convert(src, tmp_path / "mscan-t.safetensors", verify=False)
    code, out, err = cli("info", "./mscan-t.safetensors", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert (data["layout"], data["num_classes"], data["md_r"], data["training_seed"]) == ("mmseg", 19, 16, 7)


def test_info_matches_a_pulled_file_to_its_artifact_and_shows_a_failed_log(mirror, tmp_path, monkeypatch):
    import segnext_hub

    art = mirror.serve("mscan-t")
    del mirror.server.files[mirror_path(art.log_url)]  # the log's download fails: HTTP 404
    result = segnext_hub.pull("mscan-t", progress=False)
    assert result.manifest.log_error and not result.manifest.log_file
    raw = result.path / "raw" / art.filename
    code, out, err = cli("info", raw, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["registry_artifact"] == "mscan-t" and "pulled as mscan-t" in data["registry_match"]
    assert data["sha256"] == sha256_file(raw)
    code, out, err = cli("info", result.path, "--json")  # the cache folder itself
    assert code == 0 and json.loads(out)["registry_artifact"] == "mscan-t"
    code, out, err = cli("info", "mscan-t")
    assert code == 0 and "log             download failed: " in out and "sha256          None" not in out
    assert "None" not in out
    code, out, err = cli("log", "mscan-t")
    assert code == 2 and "the training log's download failed: " in err
    assert "retry with: segnext-hub pull --force mscan-t" in err and err.count("\n") == 1


def test_log_of_an_artifact_without_a_log_says_none_published(mirror):
    art = mirror.serve("mscan-t-in1k")
    code, _, err = cli("log", "mscan-t-in1k")
    assert mirror.gets(art.url) == 0  # known from the registry: nothing downloaded
    assert code == 2 and err == "error: mscan-t-in1k: none published (the publisher released no training log)\n"


def test_log_of_a_missing_file_says_no_such_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("log", "train.log.json")
    assert code == 2 and err == "error: train.log.json: no such file or folder\n"


def test_info_of_a_folder_that_is_no_model(tmp_path):
    code, _, err = cli("info", tmp_path)
    assert code == 2 and "is not a model folder" in err and err.count("\n") == 1


def test_list_names_the_multiscale_column_and_an_empty_cache(tmp_path, monkeypatch):
    """Issue 20 point 7: `ms` read like milliseconds; `list --cached` printed only a header."""
    monkeypatch.setenv("SEGNEXT_HUB_CACHE", str(tmp_path / "cache"))
    code, out, _ = cli("list")
    header = out.splitlines()[0].split()
    assert code == 0 and "mIoU-ms" in header and "ms" not in header
    code, out, _ = cli("list", "--cached")
    assert code == 0 and out.startswith("nothing cached in ") and "segnext-hub pull NAME" in out


def test_verify_and_load_name_the_same_repair(mirror):
    """Issue 20 point 7: for the same damage, verify said `pull --force` where load said `pull`."""
    import segnext_hub
    from segnext_hub.errors import DamagedEntryError

    mirror.serve("mscan-t")
    folder = segnext_hub.pull("mscan-t", progress=False).path
    with open(folder / "model.safetensors", "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(DamagedEntryError) as loaded:
        segnext_hub.load("mscan-t")
    code, _, err = cli("verify", "mscan-t")
    assert code == 1
    repair = str(loaded.value).rsplit("repair it with: ", 1)[1]
    assert repair == "segnext-hub pull mscan-t" and err.strip().endswith(f"repair it with: {repair}")
