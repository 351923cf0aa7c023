"""Drives paddle_worker.py in the PaddleSeg virtualenv (.venv-paddle) from the main test process."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Optional

from tests.parity.harness import require_venv, venv_python

WORKER = Path(__file__).with_name("paddle_worker.py")


def paddle_python() -> Optional[str]:
    """The PaddleSeg virtualenv's interpreter: $SEGNEXT_PADDLE_PYTHON or .venv-paddle."""
    return venv_python("SEGNEXT_PADDLE_PYTHON", ".venv-paddle")


def require_paddle_env() -> str:
    """The interpreter, or a skip with the reason (a failure under ``make test``, which builds it)."""
    return require_venv("SEGNEXT_PADDLE_PYTHON", ".venv-paddle", "PaddleSeg", "paddle-venv")


def run_paddle(job: dict, workdir: Path, timeout: float = 600) -> dict:
    """Run one job (see paddle_worker.py) and return its result.json, if it wrote one."""
    python = require_paddle_env()
    workdir.mkdir(parents=True, exist_ok=True)
    job_path = workdir / f"paddle_job_{job['task']}.json"
    job_path.write_text(json.dumps(dict(job, out_dir=str(workdir))))
    env = dict(os.environ, PYTHONWARNINGS="ignore", GLOG_minloglevel="2")
    proc = subprocess.run([python, str(WORKER), str(job_path)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=workdir)
    if proc.returncode != 0:
        raise AssertionError(f"PaddleSeg worker failed:\n{proc.stderr[-4000:]}")
    result = workdir / "result.json"
    return json.loads(result.read_text()) if job["task"] == "forward" else {}


def make_paddle_file(workdir: Path, variant: str, *, backbone: bool = False, seed: int = 0,
                     zip_stem: Optional[str] = None) -> Path:
    """A ``.pdparams`` (or backbone zip) that real PaddleSeg built, randomised and saved."""
    return make_paddle_files(workdir, [dict(variant=variant, backbone=backbone, seed=seed, zip_stem=zip_stem)])[0]


def make_paddle_files(workdir: Path, specs: list) -> list:
    """Several such files in one worker process (``specs``: make_paddle_file's keyword arguments)."""
    jobs, paths = [], []
    for spec in specs:
        variant, backbone, seed, zip_stem = (spec["variant"], spec.get("backbone", False), spec.get("seed", 0),
                                             spec.get("zip_stem"))
        out = workdir / f"{variant}_{'backbone' if backbone else 'segnext'}_{seed}.pdparams"
        job = {"task": "make", "variant": variant, "kind": "backbone" if backbone else "segmentor", "seed": seed,
               "out": str(out)}
        if zip_stem:
            job.update(zip=str(workdir / f"{zip_stem}.zip"), zip_stem=zip_stem)
        jobs.append(job)
        paths.append(workdir / f"{zip_stem}.zip" if zip_stem else out)
    run_paddle({"task": "make", "jobs": jobs}, workdir)
    return paths
