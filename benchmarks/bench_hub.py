"""Hub benchmarks, each against a baseline measured in the same invocation.

1. Download throughput from a loopback server: segnext_hub's downloader (hashing while
   streaming, writing a .partial, fsync, rename) vs a plain streamed requests read of the
   same URL into a file.
2. Warm load of a cached artifact: ``segnext_hub.load(folder)`` vs MMSegmentation 1.2.2's
   ``mmseg.apis.init_model(config, checkpoint.pth)`` (in its own virtualenv, see
   tests/parity), for the same weights.

    python benchmarks/bench_hub.py [--variant l] [--repeats 5] [--mib 200]
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bench_download(mib: int, repeats: int) -> None:
    """benchmarks/bench_hub_download.py owns the loopback server and the table."""
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_hub_download.py"),
                    "--size-mib", str(mib), "--repeats", str(repeats)], check=True)


def bench_load(variant: str, repeats: int) -> None:
    import torch

    from segnext_hub.conversion.converter import convert
    from segnext_hub.loading import load_folder
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
        load_folder(folder)  # warm the page cache and imports
        ours = []
        for _ in range(repeats):
            start = time.perf_counter()
            model = load_folder(folder)
            ours.append(time.perf_counter() - start)
            del model
        theirs = None
        if python:
            job = {"variant": variant, "md_r": 16, "init_model": {"checkpoint": str(tmp_path / "mmseg.pth"),
                                                                  "repeats": repeats + 1},
                   "threads": torch.get_num_threads(), "out": str(tmp_path / "out.pt")}
            (tmp_path / "job.json").write_text(json.dumps(job))
            subprocess.run([python, str(REPO / "tests/parity/mmseg_worker.py"), str(tmp_path / "job.json")],
                           check=True, capture_output=True)
            theirs = torch.load(tmp_path / "out.pt")["init_times"][1:]  # first one warms imports
    ours_s = statistics.median(ours)
    print(f"Warm load of SegNeXt-{variant.upper()} (150 classes), median of {repeats}")
    print("| method | seconds | speed-up vs MMSeg |")
    print("|---|---|---|")
    if theirs:
        theirs_s = statistics.median(theirs)
        print(f"| mmseg.apis.init_model(config, .pth) | {theirs_s:.3f} | 1.00x |")
        print(f"| segnext_hub.load (cached safetensors) | {ours_s:.3f} | {theirs_s / ours_s:.1f}x |")
    else:
        print(f"| segnext_hub.load (cached safetensors) | {ours_s:.3f} | (MMSeg venv missing) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="l")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--skip-download", action="store_true")
    args = parser.parse_args()
    if not args.skip_download:
        bench_download(args.mib, args.repeats)
        print()
    bench_load(args.variant, args.repeats)


if __name__ == "__main__":
    main()
