"""Evaluation across processes: ``torchrun --nproc_per_node=2 -m segnext_hub eval`` (gloo, CPU).

Evidence: real torch.distributed (torchrun's agent and c10d rendezvous on 127.0.0.1, the
gloo backend), a T model with random weights converted by our converter, and generated
ADE20K / Cityscapes folders (tests/tasks/test_evaluate.py). The reference is the same
evaluation in this process (no process group); the per-class counts must be equal
integer for integer, and the metrics equal too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segnext_hub.loading import load
from segnext_hub.tasks import evaluate as ev
from tests.tasks.test_evaluate import make_ade, make_cityscapes

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torchrun gives each rank one thread too

REPO = Path(__file__).resolve().parents[2]
ADE_SIZES = [(24, 32), (30, 20), (17, 29), (26, 26), (20, 30), (31, 22), (28, 28)]  # 7 images on 2 ranks
ADE_ARGS = ["--scale", "64", "32", "--seed", "5"]
CITY_ARGS = ["--scale", "96", "48", "--crop-size", "40", "40", "--stride", "32", "32", "--seed", "5"]  # 2 x 3 windows


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from segnext_hub.conversion.converter import convert
    from tests.helpers import factory

    tmp = tmp_path_factory.mktemp("dist")
    models = {}
    for name, classes in (("ade", 150), ("city", 19)):
        factory.write_mmseg(tmp / f"{name}.pth", factory.mmseg_state("t", seed=1, num_classes=classes))
        convert(tmp / f"{name}.pth", tmp / f"{name}.safetensors", verify=False)
        models[name] = tmp / f"{name}.safetensors"
    make_ade(tmp / "ade", np.random.default_rng(0), sizes=ADE_SIZES)
    make_cityscapes(tmp / "city", np.random.default_rng(1))
    return tmp, models


def torchrun(*args, nproc: int = 2, timeout: int = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "segnext_hub", "eval", *map(str, args), "-q", "--dist-timeout", "60"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def in_process(model_path, data, **kwargs) -> ev.EvalResult:
    return ev.evaluate(load(model_path), data, seed=5, progress=False, **{"scale": (64, 32), **kwargs})


def assert_same(ours: dict, reference: ev.EvalResult) -> None:
    ref = reference.to_dict()
    assert ours["areas"] == ref["areas"]  # integer counts, bit for bit
    for key in ("num_images", "aAcc", "mIoU", "mAcc", "iou", "acc"):
        assert ours[key] == ref[key], key
    assert ours["settings"]["world_size"] == 2 and ref["settings"]["world_size"] == 1


@pytest.mark.parametrize("aug", [False, True], ids=["plain", "aug-test"])
def test_ade20k_two_ranks_equal_one_process(files, aug):
    tmp, models = files
    extra = ["--aug-test", "--limit", "3"] if aug else ["--batch-size", "2", "--workers", "1"]
    proc = torchrun(models["ade"], tmp / "ade", *ADE_ARGS, *extra, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = json.loads(proc.stdout)  # one document: rank 1 printed nothing
    reference = in_process(models["ade"], tmp / "ade", aug_test=aug, limit=3 if aug else None)
    assert ours["num_images"] == (3 if aug else 7)  # uneven shards: 4 + 3, or --limit 3 split 2 + 1
    assert_same(ours, reference)


@pytest.mark.parametrize("aug", [False, True], ids=["plain", "aug-test"])
def test_cityscapes_slide_two_ranks_equal_one_process(files, aug):
    tmp, models = files
    proc = torchrun(models["city"], tmp / "city", *CITY_ARGS, *(["--aug-test"] if aug else []), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = json.loads(proc.stdout)
    reference = in_process(models["city"], tmp / "city", scale=(96, 48), crop_size=(40, 40), stride=(32, 32),
                           aug_test=aug)
    assert ours["settings"]["mode"] == "slide" and ours["num_images"] == 2
    assert_same(ours, reference)


def test_empty_shard_and_table_printed_once(files):
    tmp, models = files
    proc = torchrun(models["ade"], tmp / "ade", *ADE_ARGS, "--limit", "1")  # rank 0 has no image
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = in_process(models["ade"], tmp / "ade", limit=1)
    assert proc.stdout.count("aAcc") == 1 and proc.stdout.count("seed: 5 (--seed; rng image)") == 1
    assert f"mIoU {reference.mIoU:.2f}" in proc.stdout and "(1 images, ade20k)" in proc.stdout


def test_unreadable_image_fails_on_every_rank_without_hanging(files, tmp_path):
    tmp, models = files
    data = tmp_path / "ade"
    make_ade(data, np.random.default_rng(0), sizes=ADE_SIZES)
    bad = data / "ADEChallengeData2016/images/validation/ADE_val_00000005.jpg"  # rank 1's share
    bad.write_bytes(b"not a jpeg")
    proc = torchrun(models["ade"], data, *ADE_ARGS, "--json", timeout=120)
    assert proc.returncode != 0 and proc.stdout == ""
    assert f"error: cannot read image {bad}" in proc.stderr  # rank 1, its own error
    assert f"error: rank 1 failed: cannot read image {bad}" in proc.stderr  # rank 0 learns it
    ranks_output = proc.stderr.split("torch/distributed/elastic")[0]  # then torchrun's own report
    assert "Traceback" not in ranks_output and "exitcode: 2" in proc.stderr


def test_shards_cover_every_image_once_and_sequential_rng_needs_one_process(monkeypatch, tmp_path):
    from segnext_hub.errors import BadInputError
    from segnext_hub.tasks.distributed import World, shard

    for count in (0, 1, 2, 7, 10):
        for size in (1, 2, 3, 4):
            blocks = [list(shard(count, World(rank, size))) for rank in range(size)]
            assert sum(blocks, []) == list(range(count))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    make_ade(tmp_path, np.random.default_rng(0), sizes=ADE_SIZES[:2])
    monkeypatch.setattr(ev, "current_world", lambda: World(0, 2))
    model = type("M", (), {"num_classes": 150})()
    with pytest.raises(BadInputError, match="single process"):
        ev.evaluate(model, tmp_path, rng="sequential", progress=False)
