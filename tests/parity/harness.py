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


def venv_python(variable: str, folder: str) -> Optional[str]:
    """A peer virtualenv's interpreter: ``$variable``, else ``REPO/folder``; None if absent."""
    candidate = os.environ.get(variable) or str(REPO / folder / "bin" / "python")
    return candidate if Path(candidate).exists() else None


def require_venv(variable: str, folder: str, what: str, target: str) -> str:
    """The interpreter, or a skip with the reason (a failure under ``make test``, which builds
    it and sets SEGNEXT_REQUIRE_PARITY)."""
    python = venv_python(variable, folder)
    if python is None:
        if os.environ.get("SEGNEXT_REQUIRE_PARITY"):
            pytest.fail(f"the {what} parity virtualenv is missing (make {target})")
        pytest.skip(f"{what} parity virtualenv not built (run `make test` or `make {target}`)")
    return python


def parity_python() -> Optional[str]:
    """The MMSeg virtualenv's interpreter: $SEGNEXT_PARITY_PYTHON or .venv-parity."""
    return venv_python("SEGNEXT_PARITY_PYTHON", ".venv-parity")


def require_parity_env() -> str:
    return require_venv("SEGNEXT_PARITY_PYTHON", ".venv-parity", "MMSegmentation", "parity-venv")


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
