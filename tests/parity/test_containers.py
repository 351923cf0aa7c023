"""The factory's MMEngine checkpoint container against one the REAL MMEngine writes.

Evidence: tests/parity/container_worker.py runs a two-iteration training of a toy model
through mmengine 0.10.7's ``Runner`` in .venv-parity and calls ``Runner.save_checkpoint``;
tests/helpers/factory.py builds MMSeg 1.x checkpoints without mmengine. They must share
the container's shape (top-level, meta, message_hub, runtime_info keys; the pickled global
names a safe reader has to get through) and both must give the record read_record reads.
"""

from __future__ import annotations

import os
import pickletools
import subprocess
import zipfile
from pathlib import Path

import pytest

from segnext_hub.conversion.reading import read_checkpoint
from segnext_hub.conversion.record import read_record
from tests.helpers import factory
from tests.parity.harness import require_parity_env

pytestmark = pytest.mark.parity

WORKER = Path(__file__).with_name("container_worker.py")
STORAGES = {"torch.FloatStorage", "torch.LongStorage", "torch.DoubleStorage"}  # depend on the model's dtypes


def pickled_globals(path: Path) -> set[str]:
    """Every ``module.name`` the checkpoint's pickle asks the unpickler for."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"} - STORAGES


def test_factory_mmengine_container_matches_real_runner_save_checkpoint(tmp_path):
    python = require_parity_env()
    proc = subprocess.run([python, str(WORKER), str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    real_path = tmp_path / "real_mmengine.pth"
    ours_path = factory.write_mmseg(tmp_path / "factory.pth", factory.mmseg_state("t", num_classes=3),
                                    seed=1234, classes=["road", "kerb", "grass"])
    assert pickled_globals(ours_path) == pickled_globals(real_path)
    real, ours = read_checkpoint(real_path).obj, read_checkpoint(ours_path).obj
    assert set(ours) == set(real)
    assert set(ours["meta"]) == set(real["meta"])
    assert set(ours["message_hub"]) == set(real["message_hub"])
    assert set(ours["message_hub"]["runtime_info"]) == set(real["message_hub"]["runtime_info"])
    assert set(ours["meta"]["dataset_meta"]) >= set(real["meta"]["dataset_meta"])
    assert type(ours["state_dict"]) is type(real["state_dict"]) and hasattr(real["state_dict"], "_metadata")
    assert all(set(o) >= set(r) for o, r in zip(ours["param_schedulers"], real["param_schedulers"]))
    real_buffer = next(iter(real["message_hub"]["log_scalars"].values()))
    ours_buffer = next(iter(ours["message_hub"]["log_scalars"].values()))
    assert (real_buffer.module, real_buffer.name) == (ours_buffer.module, ours_buffer.name)
    assert set(real_buffer.state) == set(ours_buffer.state)

    record = read_record(real)
    assert (record.md_r, record.md_r_source) == (16, "checkpoint meta.cfg")
    assert (record.seed, record.seed_source) == (1234, "checkpoint meta.seed")
    assert record.classes == ("road", "kerb", "grass") and record.palette == ((10, 20, 30), (40, 50, 60),
                                                                              (70, 80, 90))
    ours_record = read_record(ours)
    assert (ours_record.md_r_source, ours_record.seed, ours_record.classes) == (
        "checkpoint meta.cfg", 1234, record.classes)
