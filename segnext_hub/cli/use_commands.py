"""Commands that use weights: predict, eval, export."""

from __future__ import annotations

import json
from typing import Optional

import click

from .common import command_options, shown, shown_lines

device_option = click.option("--device", default="cpu", show_default=True,
                             help="torch device, e.g. cpu or cuda / cuda:0.")
seed_option = click.option("--seed", type=int, default=None,
                           help="torch.manual_seed(SEED) before each image's forward; the NMF head is random.")


batch_option = click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
                            help="Same-size images (slide: one image's windows) per forward; masks do not change.")
workers_option = click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
                              help="DataLoader processes that decode and resize images.")
fast_option = click.option("--fast", is_flag=True,
                           help="Fused inference model (folded norms, fused kernels): faster, equal up to rounding.")


def _load(name_or_path: str, device: str, md_r: Optional[int] = None, fast: bool = False):
    import torch

    from ..errors import BadInputError
    from ..loading import load

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError(f"--device {device}: no CUDA device is available")
    return load(name_or_path, device=device, md_r=md_r, fast=fast)


@click.command()
@click.argument("name_or_path")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False),
              help="Folder for <image>_classes.png, <image>_color.png, <image>_overlay.png.")
@click.option("--mode", type=click.Choice(["whole", "slide"]), help="Default: the weights' test mode.")
@seed_option
@device_option
@click.option("--md-r", type=click.IntRange(min=1), help="Override the NMF rank.")
@fast_option
@batch_option
@workers_option
@click.option("--max-megapixels", type=click.FloatRange(min=0, min_open=True), default=50.0, show_default=True,
              help="Refuse larger images (checked from the header, before decoding); memory grows with it.")
@click.option("--skip-bad", is_flag=True, help="Go on past images that cannot be read; list them at the end.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@command_options
def predict(name_or_path: str, images: tuple[str, ...], out_dir: str, mode: Optional[str], seed: Optional[int],
            device: str, md_r: Optional[int], fast: bool, batch_size: int, workers: int, max_megapixels: float,
            skip_bad: bool, quiet: bool) -> None:
    """Segment IMAGES (files, or folders: every image under them, recursively, outputs in
    the same relative subfolders of OUT_DIR) with NAME_OR_PATH (registry name, local file
    or hf://org/repo).

    Writes a class-index PNG, a colour PNG in the dataset palette and an overlay per image
    (IMAGE_classes.png, ...; inputs sharing a name get the extension or their folder added,
    e.g. twin_jpg_classes.png and twin_png_classes.png), and legend.json. Images are
    decoded as MMSeg's OpenCV reader does (EXIF orientation, 16-bit, CMYK). Without
    --skip-bad, a bad image stops the run (every header is checked first). The seed
    defaults to 0 so repeated runs give the same masks.
    """
    from ..errors import BadInputError
    from ..tasks.inference import predict_files

    model = _load(name_or_path, device, md_r, fast)
    skipped: Optional[list] = [] if skip_bad else None
    written = predict_files(model, images, out_dir, mode=mode, seed=0 if seed is None else seed,
                            progress=False if quiet else None, batch_size=batch_size, workers=workers,
                            max_pixels=int(max_megapixels * 1e6), skipped=skipped)
    for paths in written:
        click.echo(shown(paths["color"]))
    if skipped:
        click.echo(f"skipped {len(skipped)} of {len(images)} images:", err=True)
        for _, reason in skipped:
            click.echo(f"  {shown(reason)}", err=True)
    if not written:
        raise BadInputError(f"none of the {len(images)} images could be read; nothing written")


@click.command("eval")
@click.argument("name_or_path")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--dataset", type=click.Choice(["ade20k", "cityscapes", "folder"]),
              help="Default: from the folder layout (folder: images/ + labels/, the model's classes).")
@click.option("--aug-test", is_flag=True, help="Multi-scale (0.5-1.75) + flip: the 'ms+flip' column.")
@click.option("--mode", type=click.Choice(["whole", "slide"]), help="Default: the dataset's test mode.")
@click.option("--scale", nargs=2, type=click.IntRange(min=32, max=8192), metavar="LONG SHORT",
              help="Keep-ratio test resize bounds. Default: the dataset's (ADE20K 2048 512, Cityscapes 2048 1024).")
@click.option("--crop-size", nargs=2, type=click.IntRange(min=32, max=8192), metavar="H W", help="Slide window size.")
@click.option("--stride", nargs=2, type=click.IntRange(min=8, max=8192), metavar="H W", help="Slide window step.")
@click.option("--seed", type=int, default=None,
              help="The run's seed; image i's NMF bases come from a generator seeded from (SEED, i).")
@click.option("--rng", type=click.Choice(["image", "sequential"]), default="image", show_default=True,
              help="image: per-image generators (same result for any process count or batch size); "
                   "sequential: torch.manual_seed(SEED) once, then image after image (MMSeg tools/test.py, 1 process).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N images.")
@device_option
@click.option("--md-r", type=click.IntRange(min=1), help="Override the NMF rank.")
@fast_option
@batch_option
@workers_option
@click.option("--dist-timeout", type=click.IntRange(min=1), default=600, show_default=True,
              help="Seconds a rank waits in a collective under torchrun before giving up.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@command_options
def eval_command(name_or_path: str, data_dir: str, dataset: Optional[str], aug_test: bool, mode: Optional[str],
                 scale: tuple[int, ...], crop_size: tuple[int, ...], stride: tuple[int, ...], seed: Optional[int], rng: str, limit: Optional[int], device: str, md_r: Optional[int], fast: bool,
                 batch_size: int, workers: int, dist_timeout: int, as_json: bool, quiet: bool) -> None:
    """mIoU / aAcc / mAcc and per-class IoU on an ADE20K or Cityscapes folder, as MMSeg computes them.

    DATA_DIR holds ADEChallengeData2016/ (or is it), or leftImg8bit/ + gtFine/, or
    images/ + labels/ (the layout fine-tuning reads; PNG class indices, 255 ignored, the
    model's classes). The seed
    defaults to the training seed the artifact records (config.json / the checkpoint's
    meta, else its training log; else 0); it is printed with its source.
    Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) each process evaluates a share of the
    images (nccl, one GPU per local rank, with --device cuda; gloo on CPU) and rank 0 prints.
    """
    from ..tasks.distributed import current_world, finish, init_from_env, launched_by_torchrun
    from ..tasks.evaluate import evaluate

    if launched_by_torchrun():
        device = init_from_env(device, dist_timeout)
    try:
        model = _load(name_or_path, device, md_r, fast)
        result = evaluate(model, data_dir, dataset=dataset, mode=mode, scale=scale or None,
                          crop_size=crop_size or None, stride=stride or None, aug_test=aug_test, seed=seed, rng=rng,
                          limit=limit, progress=False if quiet else None, batch_size=batch_size, workers=workers)
        if current_world().rank != 0:
            return
        seed, seed_source = result.settings["seed"], result.settings["seed_source"]
        if seed_source == "given":
            seed_source = "--seed"
        if as_json:
            click.echo(json.dumps(dict(result.to_dict(), seed=seed, seed_source=seed_source), indent=2))
        else:
            click.echo(shown_lines(result.format_table()))
            click.echo(shown(f"seed: {seed} ({seed_source}; rng {rng})"))
    finally:
        finish()


@click.command()
@click.argument("name_or_path")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["onnx", "openvino"]), default=None,
              help="Graph format. Default: openvino for an OUT ending in .xml, else onnx.")
@click.option("--size", nargs=2, type=click.IntRange(min=32), default=(512, 512), show_default=True,
              metavar="H W", help="Input size traced (the only size a static graph accepts).")
@click.option("--dynamic", is_flag=True, help="Free batch, height and width axes.")
@click.option("--bases", type=click.Choice(["input", "constant"]), default="input", show_default=True,
              help="NMF bases as a graph input (you supply them) or a stored constant drawn once.")
@click.option("--tolerance", type=float, default=1e-4, show_default=True,
              help="Largest accepted |runtime - PyTorch| logit difference (fp32 graph).")
@click.option("--int8", is_flag=True, help="openvino: NNCF int8 post-training quantization (NMF kept in float).")
@click.option("--calib", type=click.Path(), help="--int8: folder of calibration images (some are held out).")
@click.option("--min-agreement", type=click.FloatRange(0, 1),
              help="--int8: fail (exit 1, nothing written) below this held-out argmax agreement with fp32.")
@click.option("--force", is_flag=True, help="Overwrite OUT.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar (ONNX, on a terminal: export, checks, write).")
@command_options
def export(name_or_path: str, out: str, fmt: Optional[str], size: tuple[int, int], dynamic: bool, bases: str,
           tolerance: float, int8: bool, calib: Optional[str], min_agreement: Optional[float], force: bool,
           as_json: bool, quiet: bool) -> None:
    """Export to ONNX or OpenVINO IR and check the runtime against PyTorch before writing.

    The NMF head is random in PyTorch; in the graph its bases are an input named 'bases'
    of shape (batch, channels, rank) (L2-normalised columns) or a constant. Exit 1 when
    onnxruntime / OpenVINO disagrees beyond --tolerance (nothing written). OpenVINO IR is
    OUT (.xml) plus its weights (.bin); --int8 --calib DIR quantizes it with NNCF and
    reports the argmax agreement with fp32 on held-out images of DIR.
    """
    from ..errors import BadInputError

    fmt = fmt or ("openvino" if out.lower().endswith(".xml") else "onnx")
    if fmt == "onnx" and (int8 or calib or min_agreement is not None):
        raise BadInputError("--int8, --calib and --min-agreement need --format openvino")
    if fmt == "openvino" and int8 and not calib:
        raise BadInputError("--int8 needs calibration images: --calib DIR")
    if fmt == "openvino" and calib and not int8:
        raise BadInputError("--calib is only used with --int8")
    if fmt == "openvino":
        from ..tasks.export_openvino import export_openvino

        # Fails early (exit 2, one line) before the model is loaded when OpenVINO is missing.
        _require_module("openvino", "OpenVINO export needs the 'openvino' package: pip install 'segnext-hub[openvino]'")
        if int8:
            _require_module("nncf", "int8 quantization needs NNCF: pip install 'segnext-hub[openvino]'")
        model = _load(name_or_path, "cpu")
        report = export_openvino(model, out, size=tuple(size), dynamic=dynamic, bases=bases, tolerance=tolerance,
                                 int8=int8, calib=calib, min_agreement=min_agreement, force=force)
        if as_json:
            click.echo(json.dumps(report.to_dict(), indent=2))
            return
        click.echo(f"wrote {report.path} + {report.weights_path} ({report.size_bytes / 2**20:.1f} MiB, "
                   f"OpenVINO {report.openvino_version.split('-')[0]}, {report.precision}); fp32 graph vs PyTorch "
                   f"max abs diff {report.max_abs_diff:.2g} (tolerance {report.tolerance:g})")
        quant = report.quantization
        if quant:
            speed = f"; speed-up {quant['speedup']:.2f}x" if "speedup" in quant else ""
            click.echo(f"int8: argmax agreement with fp32 {quant['argmax_agreement']:.2%} on "
                       f"{quant['held_out_images']} held-out image(s) ({quant['calibration_images']} calibrated)"
                       f"{speed}; NMF kept in float ({quant['float_nmf_nodes']} nodes)")
        return
    from ..tasks.export_onnx import export_onnx

    model = _load(name_or_path, "cpu")
    report = export_onnx(model, out, size=tuple(size), dynamic=dynamic, bases=bases, tolerance=tolerance,
                         force=force, progress=False if quiet else None)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(f"wrote {report.path} ({report.size_bytes / 2**20:.1f} MiB, {report.exporter} exporter, "
                   f"opset {report.opset}); onnxruntime max abs diff {report.max_abs_diff:.2g} "
                   f"(tolerance {report.tolerance:g})")


def _require_module(name: str, message: str) -> None:
    import importlib.util

    from ..errors import BadInputError

    if importlib.util.find_spec(name) is None:
        raise BadInputError(message)
