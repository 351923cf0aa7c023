"""Names and paths: aliases, "did you mean", the resolve rule, and the commands that use it.

Evidence: the packaged registry and its ``aliases`` section (data), real files and folders
in a temporary directory, and the CLI run through click's runner.
"""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from segnext_hub.cli.hub import main as hub_cli
from segnext_hub.errors import BadInputError
from segnext_hub.hub.hf import parse_repo_spec
from segnext_hub.hub.registry import get_artifact
from segnext_hub.loading import resolve


@pytest.mark.parametrize("alias, name", [
    ("segnext-t", "mscan-t"),                      # the paper's name
    ("SegNeXt-B", "mscan-b"),
    ("segnext_tiny", "mscan-t"),                   # the official repo's word for the size
    ("SegNeXt_Large", "mscan-l"),
    ("segnext-t-official", "mscan-t-ade20k-official"),
    ("segnext-s-isaid", "mscan-s-isaid-jittor"),   # only JSeg publishes iSAID
    ("segnext_base_1024x1024_city_160k_jittor", "mscan-b-cityscapes-jittor"),
    ("mscan_t_in1k", "mscan-t-in1k"),
    ("segnext_mscan-t_1x16_512x512_adamw_160k_ade20k_mmseg", "mscan-t"),
])
def test_aliases_resolve(alias, name):
    assert get_artifact(alias).name == name


@pytest.mark.parametrize("alias, candidates", [
    ("segnext-b-ade", "mscan-b, mscan-b-ade20k-official, mscan-b-ade20k-jittor"),
    ("segnext_base_512x512_ade_160k", "mscan-b, mscan-b-ade20k-official, mscan-b-ade20k-jittor"),
    ("segnext-l-cityscapes", "mscan-l-cityscapes-official, mscan-l-cityscapes-jittor, mscan-l-cityscapes-paddle"),
])
def test_ambiguous_aliases_list_the_candidates(alias, candidates):
    with pytest.raises(BadInputError, match=f"is ambiguous: did you mean {candidates}\\?$"):
        get_artifact(alias)


@pytest.mark.parametrize("name, hint", [("segnext-xl", "did you mean mscan-l"), ("segnet-t", "no close match"),
                                        ("segnext-t-foo", "did you mean mscan-t")])
def test_unknown_names_get_did_you_mean(name, hint):
    with pytest.raises(BadInputError, match=hint):
        get_artifact(name)


def test_a_local_folder_never_shadows_a_registry_name(tmp_path, monkeypatch, caplog):
    """The library logs the note (the CLI shows it as ``note: ...``, tested below)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mscan-t").mkdir()
    with caplog.at_level("WARNING", logger="segnext_hub"):
        source = resolve("mscan-t")
    assert (source.kind, source.name) == ("registry", "mscan-t")
    assert "write ./mscan-t for the local path" in caplog.text
    caplog.clear()
    assert resolve("./mscan-t").kind == "path"
    with caplog.at_level("WARNING", logger="segnext_hub"):
        assert resolve("mscan-t", note=False).kind == "registry"
    assert caplog.text == ""
    (tmp_path / "mine").mkdir()  # not a registry name: the folder
    assert resolve("mine").path.resolve() == tmp_path / "mine"
    os.symlink(tmp_path / "gone", tmp_path / "dangling.pth")
    with pytest.raises(BadInputError, match="no such file"):
        resolve("dangling.pth")


def test_predict_into_a_folder_named_like_the_model_twice(mirror, tmp_path, monkeypatch):
    """``segnext-hub predict mscan-t img.jpg -o mscan-t`` twice: the second run must still
    use the registry model, not the output folder of the first."""
    from PIL import Image

    mirror.serve("mscan-t")
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 48), (120, 30, 200)).save("img.jpg")
    for run in range(2):
        result = CliRunner().invoke(hub_cli, ["predict", "-q", "mscan-t", "img.jpg", "-o", "mscan-t"])
        assert result.exit_code == 0, (run, result.stderr)
        assert (run == 1) == ("'mscan-t' is the registry artifact mscan-t" in result.stderr)
    assert (tmp_path / "mscan-t/img_color.png").is_file()


def test_log_goes_through_the_same_rule(mirror, tmp_path, monkeypatch):
    mirror.serve("mscan-t")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mscan-t").write_text("not a log")  # would have been parsed before
    result = CliRunner().invoke(hub_cli, ["log", "--json", "mscan-t"])
    assert result.exit_code == 0 and '"seed": 1234' in result.stdout


@pytest.mark.parametrize("typed, meant", [("download", "pull"), ("remove", "rm"), ("lst", "list"),
                                          ("infer", "predict")])
def test_unknown_commands_suggest_the_right_one(typed, meant):
    result = CliRunner().invoke(hub_cli, [typed, "mscan-t"])
    assert result.exit_code == 2 and f"Did you mean '{meant}'?" in result.stderr


@pytest.mark.parametrize("spec", ["org/repo@../../x", "org/repo@a/../b", "org/repo@/abs", "org/repo@.git",
                                  "org/repo@x y", "org/repo@main.lock"])
def test_hf_revisions_that_could_escape_the_cache_are_refused(spec):
    with pytest.raises(BadInputError, match="invalid revision"):
        parse_repo_spec(f"hf://{spec}")


@pytest.mark.parametrize("spec, revision", [("org/repo@main", "main"), ("org/repo@refs/pr/3", "refs/pr/3"),
                                            ("org/repo@v1.0", "v1.0"), ("org/repo", None)])
def test_ordinary_revisions_pass(spec, revision):
    assert parse_repo_spec(spec) == ("org/repo", revision)
