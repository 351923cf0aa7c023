"""Hub benchmarks, each against a baseline measured in the same invocation.

1. Download throughput from a loopback server: segnext_hub's downloader (hashing while
   streaming, writing a .partial, fsync, rename) vs a plain streamed requests read of the
   same URL into a file.
2. Warm load of a cached artifact: ``segnext_hub.load(folder)`` vs MMSegmentation 1.2.2's
   ``mmseg.apis.init_model(config, checkpoint.pth)`` (in its own virtualenv, see
   tests/parity; each round a fresh MMSeg process whose second init_model is timed), for
   the same weights, with the alternatives measured while choosing load's method;
   ``--profile`` adds load's steps timed one by one.

    python benchmarks/bench_hub.py [--variant l] [--repeats 5] [--mib 200] [--skip-download] [--profile]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bench_download(mib: int, repeats: int) -> None:
    """benchmarks/bench_hub_download.py owns the loopback server and the table."""
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_hub_download.py"),
                    "--size-mib", str(mib), "--repeats", str(repeats)], check=True)


def _warm_load_methods(folder: Path, variant: str) -> dict[str, Callable[[], Any]]:
    """Ways to get an eval-mode model from the cached folder, timed side by side.

    The first is what ``segnext_hub.load`` does; the others are the alternatives measured
    while choosing it (README, "Benchmarks"), kept so the choice can be re-checked.
    """
    import torch
    from safetensors.torch import load_file
    from torch import nn

    import segnext_hub
    from segnext_hub.loading import _copy_with_weights, _meta_skeleton, map_safetensors
    from segnext_hub.models import build_model

    weights = folder / "model.safetensors"
    skeleton = _meta_skeleton(variant, 150, 16, False)

    def construct_assign() -> nn.Module:  # build the tree on the meta device each time
        with torch.device("meta"):
            model = build_model(variant, num_classes=150, md_r=16)
        model.load_state_dict(load_file(weights), assign=True)
        return model.eval()

    return {
        "`segnext_hub.load(folder)`: mapped views + structural clone": lambda: segnext_hub.load(folder),
        "safetensors `load_file` + structural clone": lambda: _copy_with_weights(skeleton, load_file(weights)),
        "mapped views + deepcopy of the meta skeleton":
            lambda: _deepcopy_with(skeleton, map_safetensors(weights)),
        "safetensors `load_file` + deepcopy of the meta skeleton (previous `load`)":
            lambda: _deepcopy_with(skeleton, load_file(weights)),
        "meta-device `create_model` + `load_state_dict(assign=True)`": construct_assign,
    }


def _deepcopy_with(skeleton: Any, state: dict) -> Any:
    """The previous ``load``: deepcopy of the meta tree, its memo mapping each meta tensor to a loaded one."""
    import copy

    from torch import nn

    memo = {id(slot): nn.Parameter(state[k]) if isinstance(slot, nn.Parameter) else state[k]
            for k, slot in skeleton.expected.items()}
    return copy.deepcopy(skeleton.template, memo).eval()


def _mmseg_init_model_once(python: str, variant: str, checkpoint: Path, workdir: Path, threads: int) -> float:
    """One MMSeg process: init_model twice (the first warms imports and registries), the second timed."""
    import torch

    job = {"variant": variant, "md_r": 16, "init_model": {"checkpoint": str(checkpoint), "repeats": 2},
           "threads": threads, "out": str(workdir / "out.pt")}
    (workdir / "job.json").write_text(json.dumps(job))
    subprocess.run([python, str(REPO / "tests/parity/mmseg_worker.py"), str(workdir / "job.json")],
                   check=True, capture_output=True)
    return torch.load(workdir / "out.pt")["init_times"][-1]


def bench_load(variant: str, repeats: int, profile: bool) -> None:
    import torch

    from segnext_hub.conversion.converter import convert
    from tests.helpers import factory
    from tests.parity.harness import parity_python

    python = parity_python()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        state = factory.mmseg_state(variant, seed=0, md_r=16)
        factory.write_mmseg(tmp_path / "src.pth", state)
        folder = tmp_path / "cached"
        folder.mkdir()
        convert(tmp_path / "src.pth", folder / "model.safetensors", verify=False)
        (folder / "config.json").write_text(json.dumps({"variant": variant, "kind": "segmentor",
                                                        "num_classes": 150, "md_r": 16}))
        convert(tmp_path / "src.pth", tmp_path / "mmseg.pth", verify=False)
        del state
        methods = _warm_load_methods(folder, variant)
        for method in methods.values():
            method()  # warm the page cache, imports and the skeleton cache
        times: dict[str, list[float]] = {name: [] for name in methods}
        theirs = []
        # Rounds alternate MMSeg and every method, so machine load drifts hit all alike.
        for _ in range(repeats):
            if python:
                theirs.append(_mmseg_init_model_once(python, variant, tmp_path / "mmseg.pth", tmp_path,
                                                     torch.get_num_threads()))
            for name, method in methods.items():
                start = time.perf_counter()
                model = method()
                times[name].append(time.perf_counter() - start)
                del model
        if profile:
            _profile_load(folder, variant)
    ours_s = statistics.median(times[next(iter(methods))])
    print(f"Warm load of SegNeXt-{variant.upper()} (150 classes), median of {repeats} interleaved rounds")
    print("| method | seconds | speed-up vs MMSeg |")
    print("|---|---|---|")
    theirs_s = statistics.median(theirs) if theirs else None
    if theirs_s:
        print(f"| `mmseg.apis.init_model(config, .pth)` | {theirs_s:.3f} | 1.00x |")
    for name, values in times.items():
        seconds = statistics.median(values)
        ratio = f"{theirs_s / seconds:.1f}x" if theirs_s else "(MMSeg venv missing)"
        print(f"| {name} | {seconds:.3f} | {ratio} |")
    if theirs_s:
        print(f"\nsegnext_hub.load vs MMSeg: {theirs_s / ours_s:.1f}x (target >= 6x)")


def _profile_load(folder: Path, variant: str, repeats: int = 15) -> None:
    """Where ``load``'s time goes: its steps timed one by one (GC off, so a collection that
    happens to fall inside one step does not land on it; GC is reported on its own)."""
    import gc

    from segnext_hub.conversion.verify import check_keys
    from segnext_hub.hub.config import read_config
    from segnext_hub.loading import _copy_with_weights, _meta_skeleton, _place, map_safetensors, resolve

    weights = folder / "model.safetensors"
    skeleton = _meta_skeleton(variant, 150, 16, False)
    state = map_safetensors(weights)
    steps = {
        "resolve + read config.json": lambda: (resolve(folder), read_config(folder / "config.json")),
        "map_safetensors (header check, mmap, 1 view per tensor)": lambda: map_safetensors(weights),
        "check_keys (names and shapes)": lambda: check_keys(state, skeleton.expected),
        "_place (device/dtype; no-op on CPU)": lambda: _place(state, "cpu", None),
        "structural clone (modules + nn.Parameter wrapping)": lambda: _copy_with_weights(skeleton, state),
    }
    enabled = gc.isenabled()
    gc.disable()
    try:
        medians = {}
        for name, step in steps.items():
            values = []
            for _ in range(repeats):
                start = time.perf_counter()
                step()
                values.append(time.perf_counter() - start)
            medians[name] = statistics.median(values)
    finally:
        if enabled:
            gc.enable()
    pauses: list[float] = []

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            pauses.append(-time.perf_counter())
        else:
            pauses[-1] += time.perf_counter()

    gc.callbacks.append(on_gc)
    try:
        import segnext_hub

        for _ in range(repeats):
            segnext_hub.load(folder)
    finally:
        gc.callbacks.remove(on_gc)
    print(f"Where segnext_hub.load's time goes (SegNeXt-{variant.upper()}, median of {repeats} per step, GC off):")
    print("| step | ms |")
    print("|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds * 1000:.1f} |")
    longest = max(pauses, default=0.0)
    print(f"GC during {repeats} loads with GC on: {len(pauses)} collections, {sum(pauses) * 1000:.0f} ms in all, "
          f"longest {longest * 1000:.0f} ms\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="l")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--skip-download", action="store_true")
    parser.add_argument("--profile", action="store_true", help="Also time load's steps one by one.")
    args = parser.parse_args()
    if not args.skip_download:
        bench_download(args.mib, args.repeats)
        print()
    bench_load(args.variant, args.repeats, args.profile)


if __name__ == "__main__":
    main()
