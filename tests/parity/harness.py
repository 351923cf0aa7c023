"""Drives mmseg_worker.py in the MMSegmentation virtualenv from the main test process."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Optional

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("mmseg_worker.py")


def parity_python() -> Optional[str]:
    """The MMSeg virtualenv's interpreter: $SEGNEXT_PARITY_PYTHON or .venv-parity."""
    candidate = os.environ.get("SEGNEXT_PARITY_PYTHON") or str(REPO / ".venv-parity" / "bin" / "python")
    return candidate if Path(candidate).exists() else None


def require_parity_env() -> str:
    python = parity_python()
    if python is None:
        if os.environ.get("SEGNEXT_REQUIRE_PARITY"):
            pytest.fail("the MMSegmentation parity virtualenv is missing (make parity-venv)")
        pytest.skip("MMSegmentation parity virtualenv not built (run `make test` or `make parity-venv`)")
    return python


def run_mmseg(job: dict, workdir: Path, timeout: float = 900, worker: Path = WORKER) -> dict:
    """Run one job in the MMSeg virtualenv (``worker``: one of this folder's scripts) and return what it saved."""
    python = require_parity_env()
    job = dict(job, out=str(workdir / "mmseg_out.pt"))
    job_path = workdir / "job.json"
    job_path.write_text(json.dumps(job))
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([python, str(worker), str(job_path)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"MMSeg worker failed:\n{proc.stderr[-4000:]}")
    return torch.load(job["out"], weights_only=False)
