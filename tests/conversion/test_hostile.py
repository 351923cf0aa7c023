"""Small hostile files fail fast: exit 2, one line on stderr, nothing written, bounded time and memory.

Evidence: self-written crafted files (``hostile_files.py``: shared-reference DAG pickles, a zip bomb,
one payload referred to 200-2,000 times, deep nesting, half a million objects), each run through
``segnext-convert``'s entry point in a process of its own, measured from outside by the kernel's
rusage of that process. Before the bounds each of these hung for minutes, or grew to 1-8 GB.

The limits are the test's, not performance targets: under 5 s of CPU (CPU, not wall time, so a busy
2-core machine cannot fail it; wall time only guards against a hang) and a peak RSS under 1 GiB.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conversion import hostile_files

ROOT = Path(__file__).resolve().parents[2]
CPU_LIMIT_S = 5.0
PEAK_LIMIT_MIB = 1024
HANG_GUARD_S = 60

# What each case must be refused for (a phrase of its one line): the bound that caught it, not an
# accident further on. The amplification cases read in bounded memory (their shared payload stays one
# copy) and are then refused as not SegNeXt; the reshaped one exhausts its allowance instead.
REASONS = {
    "dag_dict_key": "a dict key of type tuple",
    "dag_frozenset": "a set member of type tuple",
    "dag_ordered_dict_arg": "a dict key of type tuple",
    "dag_allowed_function_arg": "_rebuild_from_type_v2 with",
    "dag_numpy_subtype": "numpy _reconstruct of",
    "dag_global_name": "STACK_GLOBAL requires str",
    "dag_jittor_var_arg": "jittor Var rebuilt from list",
    "dag_in_config": "missing from the checkpoint",
    "dag_storage_type": "unknown storage type",
    "long_key": "state dict key of 950002 characters",
    "dag_list_values": "no state dict found",
    "deep_nesting": "nests more than 100 levels",
    "many_objects": "more than 500000 objects",
    "zip_bomb_byteorder": "'archive/byteorder' is compressed",
    "shared_numpy_bytes_200": "not a SegNeXt checkpoint",
    "shared_numpy_bytes_2000": "not a SegNeXt checkpoint",
    "shared_numpy_bytes_reshaped_2000": "this file may cost beyond its size",
    "shared_jittor_var_2000": "not a SegNeXt checkpoint",
    "shared_frombuffer_2000": "not a SegNeXt checkpoint",
    "shared_nested_blob_2000": "not a SegNeXt checkpoint",
    "misaligned_storage_v3_200": "not a SegNeXt checkpoint",
    "misaligned_storage_v3_2000": "not a SegNeXt checkpoint",
}


def test_every_case_has_a_reason():
    assert sorted(REASONS) == sorted(hostile_files.CASES)


@pytest.fixture(scope="module")
def measured() -> dict:
    """All cases in one driver process: it imports torch once and forks a child per case."""
    result = subprocess.run([sys.executable, "-m", "tests.conversion.hostile_files", "--json",
                             "--as-limit-gib", "2", "--cpu-limit-s", "20"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.mark.parametrize("case", sorted(hostile_files.CASES))
def test_hostile_file_fails_fast_with_one_line(measured, case):
    got = measured[case]
    lines = got["stderr"].splitlines()
    assert got["exit"] == 2, got
    assert len(lines) == 1 and lines[0].startswith("error: ") and REASONS[case] in lines[0], got["stderr"][:500]
    assert len(lines[0]) < 600
    assert got["cpu_s"] < CPU_LIMIT_S and got["wall_s"] < HANG_GUARD_S, got
    assert got["peak_mib"] < PEAK_LIMIT_MIB, got
    assert got["left"] == [], got  # no output, no temporary file


def test_the_console_script_on_the_zip_bomb(tmp_path):
    """The same limits around the real ``segnext-convert`` command in a fresh process, measured as
    ``getrusage(RUSAGE_CHILDREN)`` in a small wrapper process whose only child it is."""
    src = hostile_files.write_cases(tmp_path / "in", ["zip_bomb_byteorder"])["zip_bomb_byteorder"]
    out = tmp_path / "out"
    out.mkdir()
    # ``python -m`` runs the console script's ``main`` from this checkout (a ``segnext-convert``
    # executable would run whichever copy of the package is installed).
    command = [sys.executable, "-m", "segnext_hub.cli.convert"]
    wrapper = ("import json, resource, subprocess, sys\n"
               "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "use = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
               "print(json.dumps({'exit': done.returncode, 'stderr': done.stderr, "
               "'cpu_s': use.ru_utime + use.ru_stime, 'peak_mib': use.ru_maxrss / 1024}))\n")
    result = subprocess.run([sys.executable, "-c", wrapper, *command, str(src), str(out / "x.safetensors")],
                            cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S)
    got = json.loads(result.stdout)
    lines = got["stderr"].splitlines()
    assert got["exit"] == 2 and len(lines) == 1 and REASONS["zip_bomb_byteorder"] in lines[0], got
    # The CPU figure includes importing torch (about 1.5 s here), which the forked cases share.
    assert got["cpu_s"] < CPU_LIMIT_S and got["peak_mib"] < PEAK_LIMIT_MIB, got
    assert list(out.iterdir()) == []
