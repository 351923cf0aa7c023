"""CPU inference engines side by side: exact, fused, onnxruntime, OpenVINO fp32/bf16/int8, MMSeg.

    python benchmarks/bench_engines.py                   # T/S/B/L, 512x512, batch 1 latency + batch 8 throughput
    python benchmarks/bench_engines.py --quick           # T only, batch 1, fewer repeats, short fine-tune
    python benchmarks/bench_engines.py --variants t,b --batches 1 --threads 1 --no-agreement

Runs in .venv-openvino (`make bench-engines`): it needs openvino, nncf and onnxruntime.
Every engine runs the same random weights (realistic BN statistics) in one process with
the same thread count, and forwards are interleaved engine by engine, rotating who goes
first, so drifting load on a shared machine hits all alike; still, on a busy machine the
figures are noisy: compare ratios within one run, not across runs.

Columns: ``exact`` (the MMSeg-identical model), ``fused`` (``fuse(model)``, fp32; logits
within 2e-5 of exact), ``fused bf16`` (autocast), ``onnxruntime`` (our ONNX, fp32),
``OV fp32`` (our IR with INFERENCE_PRECISION_HINT=f32), ``OV default`` (the same IR at
OpenVINO's default precision: bf16 on CPUs with AVX512-BF16/AMX, so NOT fp32 there),
``OV int8`` (NNCF, NMF in float, calibrated on generated images), ``MMSeg`` (1.2.2, in
its venv, when present). The int8 argmax agreement is measured on a model fine-tuned
here (benchmarks/toy_finetune.py) because random weights have near-tied logits.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import toy_finetune  # noqa: E402
from benchmarks.bench_model import MMSegTimer, interleaved, load_average, machine, parity_python  # noqa: E402
from segnext_hub import create_model  # noqa: E402
from segnext_hub.models import get_variant  # noqa: E402
from segnext_hub.models.fused.model import fuse  # noqa: E402
from segnext_hub.models.random_init import randomize_  # noqa: E402
from segnext_hub.tasks import export_openvino as ex  # noqa: E402
from segnext_hub.tasks import quantize as q  # noqa: E402
from segnext_hub.tasks.export_onnx import export_onnx, random_bases  # noqa: E402

FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
ENGINES = ("mmseg", "exact", "fused", "fused-bf16", "onnxruntime", "ov-fp32", "ov-default", "ov-int8")
LABELS = {"mmseg": "MMSeg", "exact": "exact", "fused": "fused", "fused-bf16": "fused bf16",
          "onnxruntime": "onnxruntime", "ov-fp32": "OV fp32", "ov-default": "OV default", "ov-int8": "OV int8"}


def cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return " ".join(f for f in FLAGS if f in present) or "none of " + " ".join(FLAGS)
    except OSError:
        pass
    return "unknown"


def sgemm_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """fp32 matrix multiply on the same cores: the ceiling a convolution-heavy model aims at."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def model_gflops(model: torch.nn.Module, shape: list[int]) -> float:
    """Multiply-add work of one forward (convolutions, matrix products; x2 per MAC), in GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(shape), generator=torch.Generator().manual_seed(0))
    return counter.get_total_flops() / 1e9


def calibration_images(folder: Path, size: int, count: int) -> list[q.CalibrationSample]:
    toy_finetune.make_dataset(folder, count, size=size, seed=7)
    return [q.preprocess(p, (size, size)) for p in sorted((folder / "images").glob("*.png"))]


def build_engines(variant: str, args: argparse.Namespace, workdir: Path, calib: list[q.CalibrationSample],
                  mmseg: Optional[MMSegTimer]) -> tuple[dict, float]:
    """name -> (batch, x, bases) -> zero-argument runner; and the model's GFLOP at batch 1."""
    import onnxruntime as ort
    import openvino as ov

    md_r = get_variant(variant).md_r_mmseg
    exact = randomize_(create_model(variant, md_r=md_r), seed=0)
    gflop = model_gflops(exact, [1, 3, args.size, args.size])
    fused, fused_bf16 = fuse(exact), fuse(exact, autocast_dtype=torch.bfloat16)
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY"}
    need = set(args.engines)
    ov_models: dict[str, object] = {}
    if need & {"ov-fp32", "ov-default", "ov-int8"}:
        graph = ex._convert(ov, ex._WithBasesInput(exact).eval(), exact, (args.size, args.size), "input", False)
        if "ov-fp32" in need:
            ov_models["ov-fp32"] = core.compile_model(graph, "CPU", dict(config, INFERENCE_PRECISION_HINT="f32"))
        if "ov-default" in need:
            ov_models["ov-default"] = core.compile_model(graph, "CPU", config)
        if "ov-int8" in need:
            with ex._quiet_nncf():
                int8 = q.quantize(graph, calib, lambda i: random_bases(exact, 1, 100 + i).numpy(),
                                  ignored=q.nmf_node_names(graph))
            ov_models["ov-int8"] = core.compile_model(int8, "CPU", dict(config, INFERENCE_PRECISION_HINT="f32"))
    session = None
    if "onnxruntime" in need:
        path = workdir / f"{variant}.onnx"
        export_onnx(exact, path, size=(args.size, args.size), dynamic=True, exporter="torchscript", check=False,
                    force=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    if mmseg is not None:
        torch.save(exact.state_dict(), workdir / f"{variant}.pt")

    def factory(name: str, batch: int, x: torch.Tensor, bases: torch.Tensor) -> Callable[[], object]:
        feeds = {"image": x.numpy(), "bases": bases.numpy()}
        if name == "exact":
            def run() -> object:
                with torch.no_grad():
                    return exact(x, bases=bases)
            return run
        if name == "fused":
            return lambda: fused(x, bases=bases)
        if name == "fused-bf16":
            return lambda: fused_bf16(x, bases=bases)
        if name == "onnxruntime":
            return lambda: session.run(["logits"], feeds)
        if name in ov_models:
            request = ov_models[name].create_infer_request()
            return lambda: request.infer(feeds)
        if name == "mmseg":
            mmseg.load(variant, md_r, workdir / f"{variant}.pt", [batch, 3, args.size, args.size], args.threads)
            return mmseg.time_one
        raise KeyError(name)

    return factory, gflop


def bench_variant(variant: str, args: argparse.Namespace, workdir: Path, calib: list[q.CalibrationSample],
                  mmseg: Optional[MMSegTimer]) -> dict:
    factory, gflop = build_engines(variant, args, workdir, calib, mmseg)
    row: dict = {"gflop": gflop}
    for batch in args.batches:
        x = torch.randn((batch, 3, args.size, args.size), generator=torch.Generator().manual_seed(0))
        bases = _bases_like(variant, batch)
        runners = {}
        for name in args.engines:
            if name == "mmseg" and mmseg is None:
                continue
            run = factory(name, batch, x, bases)
            if name == "mmseg":
                runners[name] = run  # returns its own (in-process) seconds
            else:
                runners[name] = _timed(run)
        repeats = args.repeats if batch == 1 else max(3, args.repeats // 2)
        times = interleaved(runners, args.warmup, repeats)
        row[batch] = {name: statistics.median(values) for name, values in times.items()}
        print(f"  {variant.upper()} batch {batch}: " + ", ".join(
            f"{LABELS[n]} {s * 1000:.0f} ms" for n, s in row[batch].items()), flush=True)
    return row


def _bases_like(variant: str, batch: int) -> torch.Tensor:
    config = get_variant(variant)
    gen = torch.Generator().manual_seed(1)
    return torch.nn.functional.normalize(torch.rand((batch, config.ham_channels, config.md_r_mmseg), generator=gen),
                                         dim=1)


def _timed(run: Callable[[], object]) -> Callable[[], float]:
    def timed() -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start
    return timed


def agreement(args: argparse.Namespace, workdir: Path) -> dict:
    """int8 vs fp32 argmax agreement on a model fine-tuned here, with and without the NMF in float."""
    import openvino as ov

    data = toy_finetune.make_dataset(workdir / "toy", args.toy_images, size=128, seed=0)
    start = time.perf_counter()
    tuned = toy_finetune.finetune(data, iters=args.agreement_iters, batch_size=4, crop=128)
    train_s = time.perf_counter() - start
    held = range(args.toy_images - 8, args.toy_images)
    accuracy = toy_finetune.pixel_accuracy(tuned, data, held)
    report = ex.export_openvino(tuned, workdir / "toy-int8.xml", size=(128, 128), int8=True, calib=data / "images",
                                force=True)
    quant = report.quantization
    # The same calibration with nothing ignored: what happens when the NMF is quantized too.
    graph = ex._convert(ov, ex._WithBasesInput(tuned).eval(), tuned, (128, 128), "input", False)
    images = q.list_images(data / "images")
    calib_paths, held_paths = q.split_holdout(images, ex.DEFAULT_HOLDOUT)
    calib = [q.preprocess(p, (128, 128)) for p in calib_paths]
    held_samples = [q.preprocess(p, (128, 128)) for p in held_paths]
    nncf = q._nncf()
    with ex._quiet_nncf():
        naive = nncf.quantize(graph, nncf.Dataset(range(len(calib)), lambda i: {
            "image": calib[i].image, "bases": random_bases(tuned, 1, ex.CALIBRATION_BASES_SEED + i).numpy()}),
            subset_size=len(calib))
    core = ov.Core()
    naive_agreement, _ = q.argmax_agreement(
        ex.runner(ex._compile(core, graph)), ex.runner(ex._compile(core, naive)), held_samples,
        lambda i: random_bases(tuned, 1, ex.CALIBRATION_BASES_SEED + len(calib) + i).numpy())
    return {"iters": args.agreement_iters, "train_s": train_s, "accuracy": accuracy,
            "agreement": quant["argmax_agreement"], "pixels": quant["agreement_pixels"],
            "held_out": quant["held_out_images"], "naive_agreement": naive_agreement,
            "speedup_128": quant.get("speedup")}


def print_table(results: dict, args: argparse.Namespace, sgemm: float) -> None:
    engines = [e for e in args.engines if any(e in r.get(b, {}) for r in results.values() for b in args.batches)]
    for batch in args.batches:
        unit = "ms" if batch == 1 else "img/s"
        print(f"\n{'Latency, batch 1 (ms, median)' if batch == 1 else f'Throughput, batch {batch} (images/s)'}:")
        ratio = "ov-fp32" in engines and "fused" in engines
        print("| variant | GFLOP | " + " | ".join(f"{LABELS[e]} {unit}" for e in engines)
              + (" | fused / OV fp32 | OV int8 speed-up | fused GFLOP/s |" if ratio else " |"))
        print("|" + "---|" * (len(engines) + 2 + (3 if ratio else 0)))
        for variant, row in results.items():
            times = row.get(batch, {})
            cells = []
            for e in engines:
                if e not in times:
                    cells.append("-")
                else:
                    cells.append(f"{times[e] * 1000:.0f}" if batch == 1 else f"{batch / times[e]:.2f}")
            line = f"| {variant.upper()} | {row['gflop']:.1f} | " + " | ".join(cells)
            if ratio:
                int8 = f"{times['ov-fp32'] / times['ov-int8']:.2f}x" if "ov-int8" in times else "-"
                gflops = row["gflop"] * batch / times["fused"]
                line += (f" | {times['fused'] / times['ov-fp32']:.2f} | {int8} | "
                         f"{gflops:.0f} ({100 * gflops / sgemm:.0f}% of sgemm)")
            print(line + " |")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="t,s,b,l", help="comma-separated subset of t,s,b,l")
    parser.add_argument("--batches", default="1,8", help="batch sizes (1: latency; others: throughput)")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"subset of {','.join(ENGINES)}")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7, help="timed forwards at batch 1 (half that, >= 3, above)")
    parser.add_argument("--calib-images", type=int, default=8, help="generated calibration images (random weights)")
    parser.add_argument("--no-mmseg", action="store_true")
    parser.add_argument("--no-agreement", action="store_true", help="skip the fine-tune + int8 agreement")
    parser.add_argument("--agreement-iters", type=int, default=300)
    parser.add_argument("--toy-images", type=int, default=48)
    parser.add_argument("--quick", action="store_true",
                        help="T only, batch 1, 5 repeats, 1 warm-up, 80 fine-tune iterations")
    args = parser.parse_args(argv)
    if args.quick:
        args.variants, args.batches, args.repeats, args.warmup = "t", "1", 5, 1
        args.agreement_iters, args.toy_images, args.calib_images = 80, 32, 4
    args.variants = [get_variant(v).name for v in args.variants.split(",") if v.strip()]
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(args.engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engines {sorted(unknown)}; choose from {','.join(ENGINES)}")
    return args


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import openvino as ov

    python = None if args.no_mmseg or "mmseg" not in args.engines else parity_python()
    sgemm = sgemm_gflops(args.threads)
    print(f"# {machine()}; OpenVINO {ov.get_version().split('-')[0]}; {args.threads} threads; "
          f"input Bx3x{args.size}x{args.size}; load average {load_average()}")
    print(f"# CPU flags: {cpu_flags()}; fp32 sgemm (2048^3) {sgemm:.0f} GFLOP/s")
    if python is None and "mmseg" in args.engines and not args.no_mmseg:
        print("# MMSeg virtualenv not found (.venv-parity / $SEGNEXT_PARITY_PYTHON): no MMSeg column")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        calib = calibration_images(workdir / "calib", args.size, args.calib_images) if "ov-int8" in args.engines else []
        mmseg = MMSegTimer(python, workdir) if python else None
        try:
            for variant in args.variants:
                results[variant] = bench_variant(variant, args, workdir, calib, mmseg)
        finally:
            if mmseg is not None:
                mmseg.close()
        found = None if args.no_agreement else agreement(args, workdir)
    print(f"# load average after: {load_average()}")
    print_table(results, args, sgemm)
    if found:
        print(f"\nint8 agreement (SegNeXt-T fine-tuned here for {found['iters']} iterations on generated 128x128 "
              f"images, {found['train_s']:.0f} s; fp32 pixel accuracy {found['accuracy']:.1%} on 8 held-out "
              f"images): argmax agreement int8 vs fp32 {found['agreement']:.2%} over {found['pixels']} logit pixels of "
              f"{found['held_out']} held-out images with the NMF in float; {found['naive_agreement']:.2%} when the "
              f"NMF is quantized too.")


if __name__ == "__main__":
    main()
