"""Hugging Face Hub: the exported folder, push + ``load("hf://...")`` through a fake Hub on
127.0.0.1 (tests/fake_hf_hub.py), offline mode, one-line errors and the ``push`` CLI.

Nothing here talks to the real Hub: the endpoint is always the loopback fake (or a closed
port), registry checkpoints come from a loopback mirror, and every Hugging Face cache path
points into a temp folder.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file

import segnext_hub
from segnext_hub.cli.hub import main as hub_cli
from segnext_hub.errors import BadInputError, DownloadError, OfflineError
from segnext_hub.hub import hf
from segnext_hub.config import ArtifactConfig
from segnext_hub.hub.config import with_registry
from segnext_hub.hub.registry import get_artifact
from segnext_hub.loading import load_folder
from segnext_hub.models import SegNeXt, build_model
from segnext_hub.tasks import publish
from tests.helpers import factory
from tests.helpers.fake_hf_hub import FakeHub
from tests.helpers.http_server import LoopbackServer
from tests.helpers.mirror import checkpoint_bytes, mirror_path, training_log

TOKEN = "hf_test_write_token"
REPO = "me/segnext-t"
UPLOADED = {"model.safetensors", "config.json", "README.md"}
EXPORT_FILES = UPLOADED | {"segnext-export.json"}  # the export's own manifest stays local


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One registry mirror serving mscan-t, one fake Hub, temp caches; shared by the module
    so the (slow, 2-core) conversion of mscan-t happens once."""
    tmp = tmp_path_factory.mktemp("hf")
    with pytest.MonkeyPatch.context() as mp, LoopbackServer() as mirror, FakeHub(token=TOKEN) as hub:
        _isolate_hugging_face(mp, tmp)
        art = get_artifact("mscan-t")
        mirror.add(mirror_path(art.url), checkpoint_bytes(art))
        mirror.add(mirror_path(art.log_url), training_log())
        mp.setenv("SEGNEXT_HUB_CACHE", str(tmp / "cache"))
        mp.setenv("SEGNEXT_HUB_MIRROR", mirror.base_url)
        mp.setenv("HF_ENDPOINT", hub.url)
        yield SimpleNamespace(tmp=tmp, hub=hub, art=art)


def _isolate_hugging_face(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    """Temp HF_HOME/HF_HUB_CACHE, no token, online; and, because huggingface_hub freezes its
    constants at import, its agent-detection registry (fetched from the import-time
    endpoint and cached under the import-time HF_HOME) is pre-filled empty."""
    mp.setenv("HF_HOME", str(tmp / "hf-home"))
    mp.setenv("HF_HUB_CACHE", str(tmp / "hf-home" / "hub"))
    mp.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "SEGNEXT_HUB_OFFLINE"):
        mp.delenv(var, raising=False)
    import huggingface_hub.constants as constants

    mp.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp / "hf-home" / ".agent_harnesses.json"), raising=False)
    mp.setattr(constants, "HF_TOKEN_PATH", str(tmp / "hf-home" / "token"), raising=False)
    mp.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp / "hf-home" / "stored_tokens"), raising=False)
    try:
        import huggingface_hub.utils._detect_agent as detect

        mp.setattr(detect, "_registry", {"standardEnvVars": [], "harnesses": {}}, raising=False)
    except ImportError:
        pass


def source_state() -> dict:
    """The tensors the mirror's mscan-t checkpoint holds (factory caches them per process)."""
    return factory.mmseg_state("t", num_classes=150, md_r=16)


def same_outputs(model_a, model_b, seed: int = 3) -> bool:
    """Equal logits from the same NMF seed: the head draws random bases every forward."""
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.manual_seed(seed)
        first = model_a(x)
        torch.manual_seed(seed)
        second = model_b(x)
    return torch.equal(first, second)


def reference_model() -> SegNeXt:
    model = build_model("t", num_classes=150, md_r=16)
    model.load_state_dict(source_state())
    return model.eval()


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and text.strip() == text and text, repr(text)
    return text


# --------------------------------------------------------------------------- export


def test_export_of_a_registry_artifact(world):
    out = publish.export_folder("mscan-t", world.tmp / "export-t", repo_id=REPO)
    assert {p.name for p in out.iterdir()} == EXPORT_FILES
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".export-t.")]  # no staging left
    cache = segnext_hub.pull("mscan-t").path
    assert (out / "model.safetensors").read_bytes() == (cache / "model.safetensors").read_bytes()
    config = json.loads((out / "config.json").read_text())
    assert config == json.loads((cache / "config.json").read_text())
    with safe_open(str(out / "model.safetensors"), "pt") as handle:
        meta = handle.metadata()
    assert (meta["architecture"], meta["variant"], meta["md_r"], meta["layout"]) == ("segnext", "t", "16", "mmseg")

    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "segnext-hub"
    assert {"semantic-segmentation", "segnext", "ade20k"} <= set(meta["tags"])
    art, manifest = world.art, json.loads((cache / "manifest.json").read_text())
    for fact in ("41.50", "42.59", "52.38", art.metrics.source, art.provenance, art.url, art.license,
                 art.log_url, manifest["raw_sha256"], "md_r = 16", config["md_r_source"], "torch.manual_seed",
                 f'segnext_hub.load("hf://{REPO}")', "scale=(2048, 512)", "passed"):
        assert fact in card, fact

    model = load_folder(out)
    state = model.state_dict()
    assert state.keys() == source_state().keys()
    assert all(torch.equal(state[k], v) for k, v in source_state().items())
    assert same_outputs(model, reference_model())


def test_export_of_a_local_checkpoint_converts_and_verifies(world):
    src = factory.write_official(world.tmp / "my_segnext.pth", source_state())
    out = publish.export_folder(src, world.tmp / "export-local")
    assert {p.name for p in out.iterdir()} == EXPORT_FILES
    config = json.loads((out / "config.json").read_text())
    schema = ArtifactConfig(variant="t", num_classes=150).to_json()
    assert config.keys() == schema.keys()
    # The file's own record travels into the export, as into a pull's config.json.
    assert (config["training_seed"], config["training_seed_source"]) == (0, "checkpoint meta.seed")
    assert (config["name"], config["source_layout"], config["md_r"], config["dataset"]) == \
        ("my_segnext", "official", 16, "ade20k")
    card = (out / "README.md").read_text()
    assert "license" not in front_matter(card)  # unknown: the card says so instead of guessing
    assert "Licence" in card and "Not recorded" in card and "my_segnext.pth" in card
    assert "hf://ORG/NAME" in card and "checkpoint meta.config (ham_kwargs MD_R=16)" in card  # its own record
    assert same_outputs(load_folder(out), reference_model())


def test_export_refuses_an_existing_folder_and_never_leaves_half_a_folder(world, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(BadInputError, match="already exists") as err:
        publish.export_folder("mscan-t", out)
    one_line(err.value)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    with pytest.raises(BadInputError, match="was not written by an export") as err:  # finding 11
        publish.export_folder("mscan-t", out, force=True)
    one_line(err.value)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()
    publish.export_folder("mscan-t", out, force=True)  # an empty folder has nothing to lose

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(BadInputError) as err:
        publish.export_folder(junk, out, force=True)
    one_line(err.value)
    assert {p.name for p in out.iterdir()} == EXPORT_FILES  # failed export: old folder untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pth", "out"]  # no staging folder left

    publish.export_folder("mscan-t", out, force=True)
    assert {p.name for p in out.iterdir()} == EXPORT_FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pth", "out"]  # old copy removed


def test_force_replaces_only_an_earlier_export(world, tmp_path):
    """Issue 19, finding 11: ``push --folder-only DIR --force`` once deleted any folder. Now
    only one whose segnext-export.json names every file in it (not a forged marker over a
    folder of someone's files, not a file added to an export)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    code, out = cli("push", "mscan-t", "--folder-only", str(home), "--force")
    assert code == 2 and "was not written by an export" in out and len(out.strip().splitlines()) == 1
    assert (home / "thesis.tex").read_text() == "years of work"

    export = tmp_path / "export"
    publish.export_folder("mscan-t", export)
    (export / "notes.txt").write_text("added after the export")
    with pytest.raises(BadInputError, match="holds 'notes.txt', which the earlier export did not write"):
        publish.export_folder("mscan-t", export, force=True)
    assert (export / "notes.txt").is_file()
    (export / "notes.txt").unlink()
    publish.export_folder("mscan-t", export, force=True)
    assert {p.name for p in export.iterdir()} == EXPORT_FILES


# --------------------------------------------------------------------------- round trip


def test_push_then_load_through_hf_round_trip(world, monkeypatch):
    hub = world.hub
    url = publish.push("mscan-t", REPO, token=TOKEN)
    assert url == f"{hub.url}/{REPO}"
    pushed = hub.files(REPO)
    assert set(pushed) == UPLOADED
    cache = segnext_hub.pull("mscan-t").path
    assert pushed["model.safetensors"] == (cache / "model.safetensors").read_bytes()
    first_commit = hub.repos[REPO].head
    posts = {path for method, path in hub.log if method == "POST"}
    assert {"/api/repos/create", "/api/validate-yaml", f"/api/models/{REPO}/preupload/main",
            f"/api/models/{REPO}/commit/main"} <= posts

    model = segnext_hub.load(f"hf://{REPO}")
    state, expected = model.state_dict(), load_file(str(cache / "model.safetensors"))
    assert state.keys() == expected.keys() and all(torch.equal(state[k], v) for k, v in expected.items())
    assert model.segnext_config.md_r == 16 and model.segnext_config.name == "mscan-t"
    assert (world.tmp / "hf-home" / "hub" / "models--me--segnext-t").is_dir()  # the temp HF cache

    # review flow: export, edit the card, push the folder; the edit is what gets published
    reviewed = publish.export_folder("mscan-t", world.tmp / "reviewed", repo_id=REPO)
    (reviewed / "README.md").write_text((reviewed / "README.md").read_text() + "\nReviewed by a human.\n")
    publish.push(reviewed, REPO, token=TOKEN, commit_message="reviewed card")
    assert hub.repos[REPO].head != first_commit
    assert hub.files(REPO)["README.md"].endswith(b"Reviewed by a human.\n")
    newest = Path(hf.download_repo(REPO))
    pinned = Path(hf.download_repo(f"{REPO}@{first_commit}"))
    assert "Reviewed by a human." in (newest / "README.md").read_text()
    assert "Reviewed by a human." not in (pinned / "README.md").read_text()

    # offline: served from the HF cache without a single request; push refuses at once
    for var in ("SEGNEXT_HUB_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
        requests = len(hub.log)
        assert same_outputs(segnext_hub.load(f"hf://{REPO}"), model)
        with pytest.raises(OfflineError, match=var):
            publish.push(reviewed, REPO, token=TOKEN)
        assert len(hub.log) == requests
        monkeypatch.delenv(var)


# --------------------------------------------------------------------------- errors


def test_offline_and_not_cached_is_a_clear_offline_error(world, monkeypatch):
    for var in ("SEGNEXT_HUB_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
        requests = len(world.hub.log)
        with pytest.raises(OfflineError) as err:
            segnext_hub.load("hf://me/never-pushed")
        text = one_line(err.value)
        assert var in text and "not in the local Hugging Face cache" in text and str(world.tmp) in text
        assert len(world.hub.log) == requests
        monkeypatch.delenv(var)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_hub_errors_are_one_line(world, monkeypatch):
    hub = world.hub
    hub.seed("me/not-segnext", {"README.md": b"# hello\n"})
    commit = hub.seed("me/half", {"config.json": b'{"architecture": "bert"}', "model.safetensors": b"x"})
    cases = [
        ("hf://me/missing", BadInputError, "repository not found"),
        ("hf://me/not-segnext", BadInputError, "not a segnext-hub export"),
        ("hf://me/half", BadInputError, "does not describe a SegNeXt"),
        (f"hf://me/half@{'0' * 40}", BadInputError, "no such revision"),
        ("hf://me/half@nope", BadInputError, "no such revision"),
        ("hf://not a repo", BadInputError, "invalid Hub repo"),
        ("hf://me/half@", BadInputError, "empty revision"),
    ]
    for spec, kind, words in cases:
        with pytest.raises(kind) as err:
            segnext_hub.load(spec)
        assert words in one_line(err.value), (spec, str(err.value))
    with pytest.raises(BadInputError, match=f"{commit}: config.json does not describe"):
        hf.download_repo(f"me/half@{commit}")  # a pinned commit is fetched, then checked

    with pytest.raises(BadInputError) as err:
        publish.push("mscan-t", "me/other", token="wrong-token")
    assert "refused the credentials" in one_line(err.value) and "HTTP 401" in str(err.value)
    assert "me/other" not in hub.repos

    broken = publish.export_folder("mscan-t", world.tmp / "broken-card", repo_id="me/other")
    card = (broken / "README.md").read_text()
    (broken / "README.md").write_text(card.replace("tags:\n-", "tags: [oops\n-", 1))
    with pytest.raises(BadInputError) as err:
        publish.push(broken, "me/other", token=TOKEN)
    assert "rejected the model card" in one_line(err.value)

    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    with pytest.raises(DownloadError) as err:
        segnext_hub.load("hf://me/anything")
    assert "could not be reached" in one_line(err.value)
    with pytest.raises(DownloadError) as err:
        publish.push("mscan-t", "me/other", token=TOKEN)
    assert "cannot reach" in one_line(err.value)


# --------------------------------------------------------------------------- CLI


def cli(*args: str):
    result = CliRunner().invoke(hub_cli, list(args))
    return result.exit_code, result.output


def test_cli_push_folder_only_then_push(world):
    folder = world.tmp / "cli-folder"
    code, out = cli("push", "mscan-t", "--repo", "me/cli", "--folder-only", str(folder))
    assert code == 0, out
    assert str(folder) in out and {p.name for p in folder.iterdir()} == EXPORT_FILES
    assert 'hf://me/cli")' in (folder / "README.md").read_text()

    code, out = cli("push", "mscan-t", "--folder-only", str(folder))
    assert code == 2 and "already exists" in out and len(out.strip().splitlines()) == 1
    code, out = cli("push", "mscan-t", "--folder-only", str(folder), "--force")
    assert code == 0, out
    assert "hf://ORG/NAME" in (folder / "README.md").read_text()

    code, out = cli("push", "mscan-t")
    assert code == 2 and "--repo ORG/NAME is required" in out and len(out.strip().splitlines()) == 1
    code, out = cli("push", str(folder), "--repo", "me/cli", "--token", "bad", "--endpoint", world.hub.url)
    assert code == 2 and out.startswith("error:") and "credentials" in out and len(out.strip().splitlines()) == 1

    code, out = cli("push", str(folder), "--repo", "me/cli", "--token", TOKEN, "--endpoint", world.hub.url,
                    "--private", "-m", "from the CLI")
    assert code == 0, out
    assert out.strip().splitlines()[-1] == f"{world.hub.url}/me/cli"
    assert world.hub.repos["me/cli"].private
    assert set(world.hub.files("me/cli")) == UPLOADED

    code, out = cli("push", "--help")
    assert code == 0 and "--folder-only" in out and "hf://ORG/NAME" in out and "HF_TOKEN" in out



def test_card_flags_md_r_as_disputed_only_while_the_registry_chose_it():
    """MMSeg B's registry MD_R is unsettled; once the checkpoint records its own, the card
    states that value and its source without the dispute note."""
    art = get_artifact("mscan-b")
    guessed_config = with_registry(ArtifactConfig(variant="b", num_classes=150, md_r=16,
                                                  md_r_source=f"registry: {art.md_r_source}"), art)
    guessed = publish.model_card(guessed_config, REPO, artifact=art)
    assert "The sources disagree on this value" in guessed
    recorded_config = guessed_config.replace(
        md_r=64, md_r_source="checkpoint meta.cfg (LightHamHead without MD_R: code default 64)")
    recorded = publish.model_card(recorded_config, REPO, artifact=art)
    assert "The sources disagree on this value" not in recorded
    assert "`md_r = 64`, from: checkpoint meta.cfg" in recorded
