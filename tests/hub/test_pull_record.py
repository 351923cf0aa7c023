"""The artifact's own record (MD_R, training seed, classes, palette) through pull, info, load,
eval, predict and segnext-convert.

Evidence: checkpoints in the containers the real runners write (tests/helpers/factory.py:
MMEngine ``Runner.save_checkpoint`` and mmcv 1.x ``save_checkpoint`` layouts, checked
against real mmengine in tests/conversion/test_real_containers.py), served by a loopback
mirror on 127.0.0.1 at the registry's URLs with an mmcv ``.log.json`` beside them.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors import safe_open

import segnext_hub
from segnext_hub.cli.convert import main as convert_cli
from segnext_hub.cli.hub import main as hub_cli
from segnext_hub.hub.cache import artifact_dir, remove_artifact
from tests.helpers import factory
from tests.helpers.mirror import training_log

RECORD_KEYS = ("md_r", "md_r_source", "training_seed", "training_seed_source")


def cli(main, *args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def config_of(name: str) -> dict:
    return json.loads((artifact_dir(name) / "config.json").read_text())


def test_b_checkpoint_recording_64_settles_the_registry_and_is_used(mirror, tmp_path, one_torch_thread):
    from tests.tasks.test_evaluate import make_ade

    # MMSeg's B: the registry says 16, unsettled; the checkpoint's cfg has no ham_kwargs
    # (official B config: code default 64) and its log agrees.
    mirror.serve("mscan-b", md_r=None, train_seed=77)
    code, _, err = cli(hub_cli, "pull", "-q", "mscan-b")
    assert code == 0, err
    assert "disagree" not in err  # the unsettled registry value steps aside silently
    config = config_of("mscan-b")
    assert config["md_r"] == 64
    assert config["md_r_source"] == "checkpoint meta.cfg (LightHamHead without MD_R: code default 64)"
    assert (config["training_seed"], config["training_seed_source"]) == (77, "checkpoint meta.seed")
    assert config["classes"] is None  # ADE20K's own names: nothing to record
    manifest = json.loads((artifact_dir("mscan-b") / "manifest.json").read_text())
    assert manifest["record"]["md_r"] == 64 and manifest["record_disagreements"] == []

    model = segnext_hub.load("mscan-b")
    assert model.decode_head.md_r == 64
    overridden = segnext_hub.load("mscan-b", md_r=16)  # the user's override wins, and says so
    assert overridden.decode_head.md_r == 16
    assert overridden.segnext_config.md_r_source == "user override (md_r=16)"

    code, out, _ = cli(hub_cli, "info", "mscan-b", "--json")
    info = json.loads(out)
    assert code == 0 and {k: info[k] for k in RECORD_KEYS} == {
        "md_r": 64, "md_r_source": config["md_r_source"], "training_seed": 77,
        "training_seed_source": "checkpoint meta.seed"}

    make_ade(tmp_path / "data", np.random.default_rng(0), sizes=[(33, 41)])
    code, out, err = cli(hub_cli, "eval", "mscan-b", tmp_path / "data", "-q", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["seed"], result["seed_source"]) == (77, "training seed, checkpoint meta.seed")
    from segnext_hub.tasks.evaluate import evaluate

    expected = evaluate(segnext_hub.load("mscan-b", md_r=64), tmp_path / "data", seed=77, progress=False)
    assert result["iou"] == json.loads(json.dumps(expected.to_dict()))["iou"]
    code, out, _ = cli(hub_cli, "eval", "mscan-b", tmp_path / "data", "-q", "--seed", "3")
    assert code == 0 and "seed: 3 (--seed; rng image)" in out


def test_checkpoint_and_log_disagreeing_warn_once_at_pull_and_in_info(mirror):
    mirror.serve("mscan-t", train_seed=5, log=training_log(seed=1234, md_r=16))
    code, _, err = cli(hub_cli, "pull", "-q", "mscan-t")
    assert code == 0
    lines = [line for line in err.splitlines() if "disagree" in line]
    assert lines == ["warning: mscan-t: sources disagree: seed: training log meta.seed says 1234, "
                     "checkpoint meta.seed says 5; using 5 (checkpoint meta.seed)"]
    assert config_of("mscan-t")["training_seed"] == 5
    code, out, err = cli(hub_cli, "info", "mscan-t")
    assert code == 0 and "training seed   5 (checkpoint meta.seed)" in out
    assert "MD_R            16 (checkpoint meta.cfg (ham_kwargs MD_R=16))" in out
    assert [line for line in err.splitlines() if "disagree" in line] == lines
    code, out, _ = cli(hub_cli, "info", "mscan-t", "--json")
    assert json.loads(out)["record_warnings"] == [lines[0][len("warning: "):]]


def test_info_json_before_pull_shows_the_registry(mirror):
    code, out, _ = cli(hub_cli, "info", "mscan-l", "--json")
    info = json.loads(out)
    assert code == 0 and info["cached"] is False
    assert info["md_r"] == 16 and info["md_r_source"].startswith("registry: UNSETTLED")
    assert info["training_seed"] is None and info["training_seed_source"] is None


def test_log_settles_md_r_when_the_checkpoint_records_none_and_a_bad_log_never_fails(mirror):
    # an official-layout mmcv checkpoint stripped of its meta: only the log tells MD_R and seed
    art = segnext_hub.hub.registry.get_artifact("mscan-t")
    state = factory.mmseg_state("t", num_classes=150)
    bare = factory.to_bytes({"state_dict": factory.with_metadata(state)})
    mirror.serve("mscan-t", bare, log=training_log(seed=99, md_r=8))
    segnext_hub.pull("mscan-t", progress=False)
    config = config_of("mscan-t")
    assert (config["md_r"], config["training_seed"]) == (8, 99)
    assert config["md_r_source"] == "training log meta.config (ham_kwargs MD_R=8)"
    assert config["training_seed_source"] == "training log meta.seed"
    remove_artifact("mscan-t")
    mirror.serve("mscan-t", bare, log=b"\x00\xff not a log")
    result = segnext_hub.pull("mscan-t", progress=False)
    config = config_of("mscan-t")
    assert config["md_r"] == 16 and config["md_r_source"].startswith("registry: MMSeg 1.x config")
    assert config["training_seed"] is None and result.manifest.log_file
    assert art.md_r_settled


def test_custom_five_class_checkpoint_keeps_its_names_and_colours(tmp_path, one_torch_thread):
    names = ["road", "kerb", "grass", "tree", "sky"]
    colours = [[10, 20, 30], [40, 50, 60], [70, 80, 90], [100, 110, 120], [130, 140, 150]]
    state = factory.mmseg_state("t", seed=2, num_classes=5)
    src = factory.write_mmseg(tmp_path / "mine.pth", state, seed=11, classes=names, palette=colours)
    code, out, err = cli(convert_cli, src, tmp_path / "mine.safetensors")
    assert code == 0, err
    assert "seed        11 (checkpoint meta.seed)" in out
    with safe_open(str(tmp_path / "mine.safetensors"), "pt") as handle:
        meta = handle.metadata()
    assert json.loads(meta["classes"]) == names and json.loads(meta["palette"]) == colours
    assert (meta["training_seed"], meta["training_seed_source"]) == ("11", "checkpoint meta.seed")

    for loaded in (tmp_path / "mine.safetensors", src):  # our safetensors, and the raw .pth converted on load
        model = segnext_hub.load(loaded)
        assert list(model.segnext_config.classes) == names and model.segnext_config.training_seed == 11
    image = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(image)
    code, _, err = cli(hub_cli, "predict", tmp_path / "mine.safetensors", image, "-o", tmp_path / "out", "-q")
    assert code == 0, err
    legend = json.loads((tmp_path / "out" / "legend.json").read_text())
    assert [c["name"] for c in legend["classes"]] == names and [c["color"] for c in legend["classes"]] == colours
    classes = np.array(Image.open(tmp_path / "out" / "street_classes.png"))
    color = np.array(Image.open(tmp_path / "out" / "street_color.png"))
    assert np.array_equal(color, np.asarray(colours, dtype=np.uint8)[classes])

    # an .pth output carries them in dataset_meta, as MMSeg's init_model reads them
    assert cli(convert_cli, src, tmp_path / "mine_out.pth")[0] == 0
    out_meta = torch.load(tmp_path / "mine_out.pth", weights_only=True)["meta"]["dataset_meta"]
    assert out_meta["classes"] == names and out_meta["palette"] == colours


def test_convert_reads_the_log_and_overrides_beat_every_record(tmp_path):
    state = factory.mmseg_state("t", seed=2)
    bare = tmp_path / "bare.pth"
    torch.save({"state_dict": state}, bare)
    log = tmp_path / "run.log.json"
    log.write_bytes(training_log(seed=21, md_r=8))
    code, out, err = cli(convert_cli, bare, tmp_path / "a.safetensors", "--log", log, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["record"]["md_r"], report["record"]["training_seed"]) == (8, 21)
    code, out, _ = cli(convert_cli, bare, tmp_path / "b.safetensors", "--log", log, "--md-r", "4", "--seed", "3",
                       "--json")
    report = json.loads(out)
    assert (report["record"]["md_r"], report["record"]["training_seed"]) == (4, 3)
    assert report["record"]["md_r_source"] == "user override" and len(report["disagreements"]) == 2
