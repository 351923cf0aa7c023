"""CPU forward latency: segnext_hub exact vs fused vs MMSegmentation 1.2.2.

    python benchmarks/bench_model.py                      # T/S/B/L, 1x3x512x512, 2 threads
    python benchmarks/bench_model.py --variants t,b --repeats 9 --profile b
    python benchmarks/bench_model.py --gpu                # fps on CUDA, batch 1 and 8

All three run in the same invocation on the same random weights (with realistic BN
statistics), with the same thread count, and are interleaved forward by forward
(rotating which goes first), so that drifting load on a shared machine hits them alike.
MMSeg runs in its own virtualenv ($SEGNEXT_PARITY_PYTHON or .venv-parity) through
benchmarks/mmseg_timer.py; without it, only our two columns are printed.
Latencies are medians over --repeats after --warmup forwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from segnext_hub import create_model  # noqa: E402
from segnext_hub.models import get_variant  # noqa: E402
from segnext_hub.models.fused.model import fuse  # noqa: E402
from segnext_hub.models.random_init import randomize_  # noqa: E402

TIMER = Path(__file__).with_name("mmseg_timer.py")
REPLY_PREFIX = "@@mmseg-timer "
# --keep-heap: glibc serves every allocation below 1 GiB from its heap and never trims it.
KEEP_HEAP_BYTES = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)


# ---------------------------------------------------------------------------- MMSeg side
def parity_python() -> Optional[str]:
    """The MMSeg virtualenv's interpreter, found as tests/parity/harness.py finds it."""
    candidate = os.environ.get("SEGNEXT_PARITY_PYTHON") or str(REPO / ".venv-parity" / "bin" / "python")
    return candidate if Path(candidate).exists() else None


class MMSegTimer:
    """A long-lived MMSeg process that times one forward per request."""

    def __init__(self, python: str, workdir: Path, keep_heap: bool = False) -> None:
        self.stderr = open(workdir / "mmseg_timer.stderr", "w+")
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        if keep_heap:  # the environment twins of keep_heap()'s mallopt calls
            env.update(MALLOC_MMAP_THRESHOLD_=str(KEEP_HEAP_BYTES),
                       MALLOC_TRIM_THRESHOLD_=str(KEEP_HEAP_BYTES))
        self.proc = subprocess.Popen([python, str(TIMER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, env=env)

    def _ask(self, payload: dict) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(payload) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(REPLY_PREFIX):
                return json.loads(line[len(REPLY_PREFIX):])
        self.stderr.seek(0)
        raise RuntimeError(f"the MMSeg timer exited:\n{self.stderr.read()[-4000:]}")

    def load(self, variant: str, md_r: int, weights: Path, shape: list[int], threads: int) -> None:
        self._ask({"op": "load", "variant": variant, "md_r": md_r, "weights": str(weights),
                   "shape": shape, "threads": threads})

    def time_one(self) -> float:
        return self._ask({"op": "time"})["seconds"]

    def load_train(self, variant: str, md_r: int, weights: Path, batch: Path, threads: int) -> None:
        self._ask({"op": "load_train", "variant": variant, "md_r": md_r, "weights": str(weights),
                   "batch": str(batch), "threads": threads})

    def time_train(self) -> float:
        """One training iteration (loss, backward, optimiser step), in seconds."""
        return self._ask({"op": "time_train"})["seconds"]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.stderr.close()


# ---------------------------------------------------------------------------- our side
def keep_heap() -> bool:
    """Stop glibc from returning freed activation buffers to the OS (in this process).

    A forward allocates and frees hundreds of MB. Whether glibc unmaps or trims them,
    so that the next forward page-faults them back in, depends on the heap layout the
    process happened to build: MMSeg's process, after importing its registry, keeps them;
    a lean process does not, which costs the exact model ~15% on L (measured: ~200k minor
    faults per forward vs ~25k; the same model runs as fast as MMSeg inside MMSeg's
    process). This flag gives every column the same allocator behaviour.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, KEEP_HEAP_BYTES)
                    and libc.mallopt(_M_TRIM_THRESHOLD, KEEP_HEAP_BYTES))
    except (OSError, AttributeError):
        return False


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        torch.manual_seed(0)  # NMF bases, as on the MMSeg side; not timed
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    return run


def interleaved(runners: dict[str, Callable[[], float]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Warm every runner up, then time them round-robin, rotating who goes first."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    names = list(runners)
    times: dict[str, list[float]] = defaultdict(list)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(runners[name]())
    return times


def bench_variant(variant: str, args: argparse.Namespace, mmseg: Optional[MMSegTimer],
                  workdir: Path) -> dict[str, float]:
    md_r = args.md_r if args.md_r is not None else get_variant(variant).md_r_mmseg
    exact = randomize_(create_model(variant, md_r=md_r), seed=args.seed)
    fused = fuse(exact, compile=args.compile)
    shape = [args.batch, 3, args.size, args.size]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))

    def run_exact() -> None:
        with torch.no_grad():
            exact(x)

    runners = {"exact": timed(run_exact), "fused": timed(lambda: fused(x))}
    if mmseg is not None:
        weights = workdir / f"{variant}.pt"
        torch.save(exact.state_dict(), weights)
        mmseg.load(variant, md_r, weights, shape, args.threads)
        runners["mmseg"] = mmseg.time_one
    times = interleaved(runners, args.warmup, args.repeats)
    if args.profile == variant:
        profile_fused(fused, x)
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


# ---------------------------------------------------------------------------- GPU
# Published throughput at 512x512 on an A100 (the SegNeXt paper, as quoted in issue 6), fps.
A100_FPS = {"t": 52.4, "s": 42.3, "b": 35.2, "l": 22.9}


def cuda_timed(model: Callable[[torch.Tensor], object], x: torch.Tensor) -> Callable[[], float]:
    def run() -> float:
        torch.manual_seed(0)
        torch.cuda.synchronize()
        start = time.perf_counter()
        model(x)
        torch.cuda.synchronize()
        return time.perf_counter() - start
    return run


def bench_gpu(variant: str, args: argparse.Namespace) -> list[tuple[str, int, dict[str, float]]]:
    """Frames per second of exact fp32 and fused fp32 / bf16 / fp16, per batch size."""
    md_r = args.md_r if args.md_r is not None else get_variant(variant).md_r_mmseg
    exact = randomize_(create_model(variant, md_r=md_r), seed=args.seed).cuda()

    def exact_fp32(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return exact(x)

    models = {
        "exact fp32": exact_fp32,
        "fused fp32": fuse(exact, cuda_graphs=args.cuda_graphs),
        "fused bf16": fuse(exact, autocast_dtype=torch.bfloat16, cuda_graphs=args.cuda_graphs),
        "fused fp16": fuse(exact, autocast_dtype=torch.float16, cuda_graphs=args.cuda_graphs),
    }
    rows = []
    for batch in args.gpu_batches:
        x = torch.randn((batch, 3, args.size, args.size), device="cuda")
        times = interleaved({name: cuda_timed(m, x) for name, m in models.items()}, args.warmup, args.repeats)
        rows.append((variant, batch, {name: batch / statistics.median(t) for name, t in times.items()}))
    return rows


def print_gpu_table(rows: list[tuple[str, int, dict[str, float]]]) -> None:
    names = list(rows[0][2])
    print("| variant | batch | " + " | ".join(f"{n} fps" for n in names) + " | A100 paper fps | best / A100 |")
    print("|" + "---|" * (len(names) + 4))
    for variant, batch, fps in rows:
        cells = " | ".join(f"{fps[n]:.1f}" for n in names)
        paper = A100_FPS[variant]
        print(f"| {variant.upper()} | {batch} | {cells} | {paper} | {max(fps.values()) / paper:.2f}x |")


def main_gpu(args: argparse.Namespace, variants: list[str]) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--gpu: no CUDA device here")
    print(f"# {torch.cuda.get_device_name()}; torch {torch.__version__}; input Bx3x{args.size}x{args.size}; "
          f"median of {args.repeats} after {args.warmup} warm-up; cuDNN TF32 for fp32 convs: "
          f"{torch.backends.cudnn.allow_tf32}; CUDA graphs: {args.cuda_graphs}")
    rows = []
    for variant in variants:
        rows += bench_gpu(variant, args)
        print(f"  {variant.upper()} done", flush=True)
    print_gpu_table(rows)


# ---------------------------------------------------------------------------- profile
def _category(name: str, shapes: list) -> str:
    """Which part of the network an op belongs to, from its name and weight shape."""
    if "convolution" in name:
        weight = shapes[2] if len(shapes) > 2 and len(shapes[2]) == 4 else shapes[1]
        if weight[2:] == [1, 1]:
            return "1x1 convs (proj/fc/conv3, head)"
        if weight[1] == 1:
            return "depth-wise convs (MSCA, MLP 3x3)"
        return "dense 3x3 convs (stem, patch embeds)"
    if name in ("aten::bmm", "aten::softmax", "aten::_softmax", "aten::div_", "aten::matmul", "aten::mm"):
        return "NMF + ham_out (bmm, updates)"
    if "norm" in name:
        return "GroupNorm / LayerNorm"
    if "upsample" in name:
        return "bilinear resize"
    return "element-wise, copies, allocation"


def profile_fused(model: torch.nn.Module, x: torch.Tensor, rounds: int = 3) -> None:
    """Where the fused CPU forward spends its time (self time, so nothing is counted twice)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(rounds):
            model(x)
    totals: dict[str, float] = defaultdict(float)
    rows = []
    for event in prof.key_averages(group_by_input_shape=True):
        ms = event.self_cpu_time_total / 1000 / rounds
        totals[_category(event.key, event.input_shapes)] += ms
        rows.append((ms, event.key, event.count // rounds, event.input_shapes[:3]))
    total = sum(totals.values())
    print(f"\nProfile of the fused forward ({tuple(x.shape)}, {torch.get_num_threads()} threads), "
          f"{total:.0f} ms of op self-time per forward:")
    for cat, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {cat:40s} {ms:8.1f} ms  {100 * ms / total:5.1f}%")
    print("  top ops by shape:")
    for ms, key, count, shapes in sorted(rows, key=lambda r: -r[0])[:10]:
        print(f"    {ms:7.1f} ms  {count:3d}x {key} {shapes}")


# ---------------------------------------------------------------------------- report
def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def print_table(results: dict[str, dict[str, float]]) -> None:
    has_mmseg = any("mmseg" in r for r in results.values())
    head = "| variant | exact ms | fused ms | fused/exact |"
    if has_mmseg:
        head = "| variant | MMSeg ms | exact ms | fused ms | exact/MMSeg | fused/MMSeg |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for variant, r in results.items():
        if has_mmseg:
            print(f"| {variant.upper()} | {r['mmseg']:.0f} | {r['exact']:.0f} | {r['fused']:.0f} | "
                  f"{r['exact'] / r['mmseg']:.2f}x | {r['fused'] / r['mmseg']:.2f}x |")
        else:
            print(f"| {variant.upper()} | {r['exact']:.0f} | {r['fused']:.0f} | "
                  f"{r['fused'] / r['exact']:.2f}x |")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="t,s,b,l", help="comma-separated subset of t,s,b,l")
    parser.add_argument("--size", type=int, default=512, help="square input size")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7, help="timed forwards per model (median; >= 5)")
    parser.add_argument("--md-r", type=int, default=None, help="NMF rank (default: MMSeg's config, 16)")
    parser.add_argument("--seed", type=int, default=0, help="random weights")
    parser.add_argument("--no-mmseg", action="store_true", help="skip MMSegmentation")
    parser.add_argument("--compile", action="store_true", help="fuse with torch.compile")
    parser.add_argument("--profile", default=None, help="profile the fused forward of this variant")
    parser.add_argument("--gpu", action="store_true", help="fps on CUDA instead of CPU latency")
    parser.add_argument("--gpu-batches", default="1,8", help="batch sizes for --gpu")
    parser.add_argument("--cuda-graphs", action="store_true", help="--gpu: fused models replay CUDA graphs")
    parser.add_argument("--keep-heap", action="store_true",
                        help="glibc keeps freed memory in every process (same allocator state for all)")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")
    args.gpu_batches = [int(b) for b in args.gpu_batches.split(",") if b.strip()]
    return args


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.keep_heap and not keep_heap():
        print("note: --keep-heap needs glibc; allocator left as is")
    variants = [get_variant(v).name for v in args.variants.split(",") if v.strip()]
    if args.gpu:
        return main_gpu(args, variants)
    python = None if args.no_mmseg else parity_python()
    if python is None and not args.no_mmseg:
        print("note: MMSeg virtualenv not found (make parity-venv); timing segnext_hub only")
    print(f"# {machine()}; {args.threads} threads; input {args.batch}x3x{args.size}x{args.size}; "
          f"median of {args.repeats} after {args.warmup} warm-up; "
          f"{'heap kept' if args.keep_heap else 'stock allocator'}; load average {load_average()}")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        mmseg = MMSegTimer(python, workdir, args.keep_heap) if python else None
        try:
            for variant in variants:
                results[variant] = bench_variant(variant, args, mmseg, workdir)
                line = ", ".join(f"{name} {ms:.0f} ms" for name, ms in results[variant].items())
                print(f"  {variant.upper()}: {line}", flush=True)
        finally:
            if mmseg is not None:
                mmseg.close()
    print(f"# load average after: {load_average()}")
    print_table(results)


if __name__ == "__main__":
    main()
