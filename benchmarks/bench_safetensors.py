"""safetensors write and read of an L-sized state dict (~187 MiB): our streamed code vs the library.

Each run is a fresh subprocess (so peak RSS is its own); the operation is timed inside it,
imports and building the input excluded. Every method also yields the file's sha256,
because the converter and the reader both need it:
  write/ours     conversion.writing.write_safetensors (header by hand, hashed while written)
  write/library  safetensors.torch.save_file into a temp file + fileio.sha256_file + rename
  write/lib-bytes  safetensors.torch.save (the file as bytes in RAM), hashed, atomic_writer
  read/ours      conversion.reading.read_checkpoint (one read, hashed on a thread, views)
  read/library   fileio.sha256_file + safetensors.torch.load_file (two passes over the file)
  read/lib-buf   read_checkpoint's single hashed read, then safetensors.torch.load(bytes(buf))
Every read ends by copying each tensor into memory of its own, as load_state_dict does, so
lazily mapped pages are paid for too. Prints a table: median wall time, ratio vs ours, peak RSS growth relative to the file size.

    python benchmarks/bench_safetensors.py [--repeats 5] [--variant l]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, sys, time
import torch

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

mode, src, dst = sys.argv[1], sys.argv[2], sys.argv[3]
torch.set_num_threads(int(sys.argv[4]))
from safetensors import safe_open
from safetensors.torch import load, load_file, save, save_file
import hashlib
from segnext_hub.fileio import atomic_writer
from segnext_hub.conversion.reading import _read_whole_file, read_checkpoint
from segnext_hub.conversion.writing import write_safetensors
from segnext_hub.fileio import sha256_file
meta = {"format": "pt", "variant": "l"}
if mode.startswith("write"):
    state = {k: v.clone() for k, v in load_file(src).items()}  # own memory, not the mmap
base = hwm()
start = time.perf_counter()
if mode == "write/ours":
    digest = write_safetensors(dst, state, meta, force=True)
elif mode == "write/library":
    tmp = dst + ".tmp"
    save_file(state, tmp, metadata=meta)
    digest = sha256_file(tmp)
    os.replace(tmp, dst)
elif mode == "write/lib-bytes":
    data = save(state, metadata=meta)
    digest = hashlib.sha256(data).hexdigest()
    with atomic_writer(dst, force=True) as handle:
        handle.write(data)
elif mode == "read/ours":
    ckpt = read_checkpoint(src)
    digest, tensors = ckpt.sha256, ckpt.obj
    owned = {k: t.clone() for k, t in tensors.items()}
elif mode == "read/library":
    digest = sha256_file(src)
    tensors = load_file(src)
    with safe_open(src, "pt") as handle:
        handle.metadata()
    owned = {k: t.clone() for k, t in tensors.items()}
elif mode == "read/lib-buf":
    buf, hasher = _read_whole_file(__import__("pathlib").Path(src), src)
    tensors = load(bytes(buf))
    digest = hasher.hexdigest()
    hasher.close()
    owned = {k: t.clone() for k, t in tensors.items()}
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "peak_rss": hwm(), "base_rss": base, "sha256": digest}))
"""

MODES = ("write/ours", "write/library", "write/lib-bytes", "read/ours", "read/library", "read/lib-buf")


def make_input(path: Path, variant: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch
    from safetensors.torch import save_file

    import segnext_hub

    torch.manual_seed(0)
    state = segnext_hub.create_model(variant).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variant", default="l")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"segnext_{args.variant}.safetensors"
        make_input(src, args.variant)
        size = src.stat().st_size
        results: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for _ in range(args.repeats):  # interleaved, so load drifts hit every method alike
            for mode in MODES:
                dst = Path(tmp) / f"out-{mode.replace('/', '-')}.safetensors"
                proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(src), str(dst), str(args.threads)],
                                      capture_output=True, text=True, check=True)
                results[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"SegNeXt-{args.variant.upper()} state dict: {size / 2**20:.1f} MiB, {args.threads} threads, "
              f"{os.cpu_count()} CPUs, median of {args.repeats}")
        print("| method | seconds | vs ours | peak RSS growth / file size |")
        print("|---|---|---|---|")
        for mode, runs in results.items():
            ours = statistics.median(r["seconds"] for r in results[mode.split("/")[0] + "/ours"])
            sec = statistics.median(r["seconds"] for r in runs)
            growth = max(r["peak_rss"] - r["base_rss"] for r in runs)
            print(f"| {mode} | {sec:.3f} | {sec / ours:.2f}x | {growth / size:.2f}x |")
        same = {r["sha256"] for mode in ("read/ours", "read/library", "read/lib-buf") for r in results[mode]}
        print(f"read digests agree: {len(same) == 1}")


if __name__ == "__main__":
    main()
