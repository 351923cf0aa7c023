"""The eight PaddleSeg entries: list, pull, load and eval over a loopback mirror.

Evidence: the served files were built, randomised and saved by real PaddleSeg 2.8.0 on
PaddlePaddle 3.3.1 (tests/parity/paddle_worker.py; the backbones packed as PaddleSeg's
downloader expects), so these tests need the PaddleSeg virtualenv and run with the parity
suite. The training log served beside the segmentors is a PaddleSeg-style text line, which
segnext-hub keeps but does not parse: the pull must not fail on it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import segnext_hub
from segnext_hub.cli.hub import main as hub_cli
from segnext_hub.hub.registry import get_artifact
from segnext_hub.models import MSCAN, SegNeXt
from tests.helpers.mirror import mirror_path
from tests.parity.paddle_harness import make_paddle_files, require_paddle_env
from tests.tasks.test_evaluate import make_cityscapes

pytestmark = pytest.mark.parity

PADDLE_LOG = b"2023-04-01 10:00:00 [INFO]\t[TRAIN] epoch: 1, iter: 10/160000, loss: 2.9, lr: 0.000006\n"


@pytest.fixture(scope="module")
def paddle_files(tmp_path_factory):
    """One PaddleSeg-made file per entry (made once: building L in Paddle takes a while)."""
    require_paddle_env()
    names, specs = [], []
    for v in "tsbl":
        names += [f"mscan-{v}-cityscapes-paddle", f"mscan-{v}-in1k-paddle"]
        specs += [dict(variant=v, seed=20 + ord(v)),
                  dict(variant=v, backbone=True, seed=ord(v), zip_stem=f"mscan_{v}_imagenet_pretrained")]
    paths = make_paddle_files(tmp_path_factory.mktemp("paddle"), specs)
    return {name: path.read_bytes() for name, path in zip(names, paths)}


def test_list_shows_the_family_without_a_download():
    result = CliRunner().invoke(hub_cli, ["list", "--json"])
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert {f"mscan-{v}-{d}-paddle" for v in "tsbl" for d in ("cityscapes", "in1k")} <= set(rows)
    assert rows["mscan-b-cityscapes-paddle"]["miou"] == 82.74


@pytest.mark.parametrize("variant", ["t", "s", "b", "l"])
def test_pull_and_load_every_paddle_entry(mirror, paddle_files, variant):
    for name in (f"mscan-{variant}-cityscapes-paddle", f"mscan-{variant}-in1k-paddle"):
        art = get_artifact(name)
        mirror.server.add(mirror_path(art.url), paddle_files[name])
        if art.log_url:
            mirror.server.add(mirror_path(art.log_url), PADDLE_LOG)
        result = segnext_hub.pull(name, progress=False)
        assert (result.path / "raw" / art.filename).read_bytes() == paddle_files[name]
        config = json.loads((result.path / "config.json").read_text())
        assert config["source_layout"] == "paddle"
        model = segnext_hub.load(name)
        if art.kind == "backbone":
            assert isinstance(model, MSCAN)
            continue
        assert isinstance(model, SegNeXt) and model.num_classes == 19 and model.decode_head.md_r == 16
        assert model.decode_head.ham_channels == 256 == config["ham_channels"]
        assert (config["test_mode"], config["resize_scale"]) == ("whole", [2048, 1024])
        assert sum(p.numel() for p in model.parameters()) == art.params
        assert (result.path / "train.log").read_bytes() == PADDLE_LOG  # kept, though not parsed


def test_eval_runs_on_a_pulled_paddle_model(mirror, paddle_files, tmp_path):
    name = "mscan-t-cityscapes-paddle"
    art = get_artifact(name)
    mirror.server.add(mirror_path(art.url), paddle_files[name])
    mirror.server.add(mirror_path(art.log_url), PADDLE_LOG)
    root, _, _ = make_cityscapes(tmp_path, np.random.default_rng(2))
    result = CliRunner().invoke(hub_cli, ["eval", name, str(root), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["dataset"] == "cityscapes" and 0.0 <= report["mIoU"] <= 100.0
