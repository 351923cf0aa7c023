"""Fine-tune SegNeXt on your own images with MMSegmentation 1.2.2's recipe, in plain PyTorch.

    python examples/finetune.py DATA_ROOT --model mscan-t --classes classes.txt --iters 20000 --out runs/mine

DATA_ROOT holds ``images/`` and ``labels/`` (PNG class indices, 255 = ignore, matching stems),
or ADE20K's ``images/training`` + ``annotations/training`` (its 150 classes by default), or is
the folder holding one of them (``data/`` with ``ADEChallengeData2016/``, as ``segnext-hub eval``
takes it). Every label is read once before the first iteration (with a progress bar on a
terminal) and a value outside the classes stops the run then; ``--no-label-check`` skips it.
Without a terminal (a log file, CI) a line goes to stderr every ``--log-every`` iterations;
at the end the script prints what it wrote.
``--model`` is the artifact to start from (a registry name, a path, ``hf://``); its
classifier is replaced when your class count differs. With ``--backbone mscan-t-in1k`` (or a
path, or ``none`` for random weights) ``--model`` is a variant (t, s, b, l) built new around
that backbone, as MMSeg's configs start. The recipe: AdamW (lr 6e-5, weight decay 0.01, head
lr x10, no decay on norms and pos_block), linear warm-up then poly decay, one step per
iteration; samples from MMSeg's train pipeline (see segnext_hub/training/data.py).

Every --save-every iterations and at the end, OUT/last.safetensors is written (atomically):
``segnext_hub.load("OUT/last.safetensors")`` gives the fine-tuned model with its class names;
the optimiser and schedule state lie next to it, and ``--resume`` continues from it at the
same iteration with the same learning rates and the same sample stream. OUT/log.jsonl gets one
line per iteration (iteration, loss, lr), each iteration once across resumes.

Across processes (DistributedDataParallel; gloo on the CPU, nccl with one GPU per process)::

    torchrun --nproc_per_node=4 examples/finetune.py DATA_ROOT --model mscan-t --classes classes.txt \
        --batch-size 16 --accum-steps 2 --out runs/mine

``--batch-size`` is the total over all processes and accumulation steps (MMSeg's "1x16": 16
images per optimiser step): here 4 processes x 2 micro-batches x 2 images. BatchNorm stays per
process unless ``--sync-bn`` (CUDA only); ``--freeze-backbone`` / ``--freeze-stages N`` train
less on small GPUs. Rank 0 writes the checkpoint and the log; ``--resume`` works under torchrun
(each process continues its own random stream; the samples are dealt out from one stream, so
they do not depend on the number of processes). See docs/finetune.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import NoReturn, Optional, Sequence

import torch
from torch.utils.data import DataLoader

import segnext_hub
from segnext_hub.errors import BadInputError, SegnextHubError, one_line
from segnext_hub.progress import progress_bar
from segnext_hub.models.loss import decode_loss
from segnext_hub.tasks.distributed import (DEFAULT_TIMEOUT_S, current_world, finish, init_from_env,
                                           launched_by_torchrun, raise_if_any_failed)
from segnext_hub.training.checkpoint import resume_checkpoint, save_checkpoint
from segnext_hub.training.data import InfiniteSampler, SegmentationFolder, TrainTransform
from segnext_hub.training.distributed import (freeze_stages, gather_rng_states, mean_over_ranks, rank_seed,
                                              replicas_differ, train_step, use_sync_batchnorm)
from segnext_hub.training.optim import param_groups, poly_schedule


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse adds the usage)
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = Parser(prog="finetune.py", description=__doc__.split("\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data_root", type=Path,
                   help="images/ + labels/, or ADE20K's layout, or the folder holding one (as segnext-hub eval)")
    p.add_argument("--model", default="mscan-t", help="artifact to start from; with --backbone, a variant")
    p.add_argument("--backbone", help="build a new model around this MSCAN artifact ('none': random)")
    p.add_argument("--classes", help="text file, one class name per line (ADE20K layout: optional)")
    p.add_argument("--iters", type=int, default=160000, help="total iterations (MMSeg: 160000)")
    p.add_argument("--batch-size", type=int, default=16,
                   help="images per optimiser step, over all processes and accumulation steps (MMSeg: 16)")
    p.add_argument("--accum-steps", type=int, default=1,
                   help="micro-batches per step and process (gradients accumulated; all-reduced once)")
    p.add_argument("--lr", type=float, default=6e-5, help="base learning rate (the head gets 10x; MMSeg: 6e-5)")
    p.add_argument("--warmup", type=int, help="linear warm-up iterations (default: min(1500, iters // 10))")
    p.add_argument("--crop-size", type=int, default=512, help="square training crop (MMSeg ADE20K: 512)")
    p.add_argument("--out", type=Path, required=True, help="folder for last.safetensors and log.jsonl")
    p.add_argument("--save-every", type=int, default=4000, help="write OUT/last.safetensors every N iterations (and at the end)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    p.add_argument("--workers", type=int, default=4, help="DataLoader worker processes")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default here: cuda when available, else cpu)")
    p.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16",
                   help="autocast dtype on CUDA (fp16 adds a GradScaler); the CPU trains in fp32")
    p.add_argument("--seed", type=int, default=0, help="model init, dropout/drop path/NMF, samples")
    p.add_argument("--sync-bn", action="store_true",
                   help="SyncBatchNorm over all processes (CUDA only; default: BatchNorm per process, as MMSeg)")
    p.add_argument("--freeze-backbone", action="store_true", help="train the decode head only (= --freeze-stages 4)")
    p.add_argument("--freeze-stages", type=int, default=0,
                   help="no gradients, eval-mode BatchNorm for the first N backbone stages (0-4)")
    p.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help="seconds a process waits in a collective under torchrun before giving up")
    p.add_argument("--log-every", type=int, default=50,
                   help="without a terminal (a log file, CI): one progress line on stderr every N iterations")
    p.add_argument("--no-label-check", action="store_true",
                   help="skip reading every label for out-of-range values before the first iteration")
    args = p.parse_args(argv)
    for name, least in (("iters", 2), ("batch_size", 1), ("save_every", 1), ("crop_size", 1), ("workers", 0),
                        ("accum_steps", 1), ("freeze_stages", 0), ("log_every", 1)):
        if getattr(args, name) < least:
            p.error(f"--{name.replace('_', '-')} must be at least {least}")
    if args.freeze_stages > 4:
        p.error("--freeze-stages must be 0 to 4")
    if args.freeze_backbone:
        args.freeze_stages = 4
    args.world_size = int(os.environ.get("WORLD_SIZE", "1")) if launched_by_torchrun() else 1
    per_step = args.world_size * args.accum_steps
    if args.batch_size % per_step:
        p.error(f"--batch-size {args.batch_size} is not divisible by {args.world_size} process(es) x "
                f"{args.accum_steps} accumulation step(s)")
    args.micro_batch = args.batch_size // per_step
    if args.sync_bn and not str(args.device).startswith("cuda"):
        p.error("--sync-bn needs --device cuda: torch's SyncBatchNorm runs under DDP only on CUDA "
                "(on the CPU BatchNorm stays per process)")
    if args.warmup is None:  # the schedule takes 0 or 2 .. iters - 2 warm-up iterations
        args.warmup = min(1500, args.iters // 10) if args.iters >= 20 else 0
    elif not (args.warmup == 0 or 2 <= args.warmup <= args.iters - 2):
        p.error("--warmup must be 0 or between 2 and --iters - 2")
    if args.backbone is not None:
        try:
            segnext_hub.get_variant(args.model)
        except ValueError:
            p.error(f"--model must be a variant (t, s, b, l) with --backbone, got {args.model!r}")
    last = args.out / "last.safetensors"
    if args.resume and not last.is_file():
        p.error(f"--resume: {last} does not exist")
    if not args.resume and last.exists():
        p.error(f"{last} exists: pass --resume to continue it, or another --out")
    return args


def build_model(args: argparse.Namespace, num_classes: int) -> torch.nn.Module:
    if args.backbone is None:
        return segnext_hub.load(args.model, num_classes=num_classes)
    backbone = None if args.backbone.lower() == "none" else args.backbone
    # MMSeg 1.x's SegNeXt configs use NMF rank 16 for every size.
    return segnext_hub.create_model(args.model, num_classes=num_classes, md_r=16, pretrained_backbone=backbone)


def train(args: argparse.Namespace) -> None:
    device = torch.device(init_from_env(args.device, args.dist_timeout) if launched_by_torchrun() else args.device)
    world = current_world()
    torch.manual_seed(args.seed)
    dataset = SegmentationFolder(args.data_root, args.classes, seed=args.seed,
                                 transform=TrainTransform(crop_size=args.crop_size))
    lead = world.rank == 0
    if lead and dataset.root != args.data_root:
        print(f"finetune.py: dataset {dataset.root} ({len(dataset)} images, {dataset.num_classes} classes)",
              file=sys.stderr)
    if not args.no_label_check:  # every rank reads them: a bad label stops all before training
        error = None
        try:
            dataset.check_labels(progress=None if lead else False)
        except SegnextHubError as err:
            error = err
        raise_if_any_failed(error, world)
    last = args.out / "last.safetensors"
    model = segnext_hub.load(last) if args.resume else build_model(args, dataset.num_classes)
    if model.num_classes != dataset.num_classes:
        raise BadInputError(f"{last} has {model.num_classes} classes but {args.data_root} {dataset.num_classes}")
    if args.sync_bn:
        model = use_sync_batchnorm(model, device)  # same state_dict keys: checkpoints do not change
    model.to(device).train()
    freeze_stages(model, args.freeze_stages)
    optimizer = torch.optim.AdamW(param_groups(model, lr=args.lr, weight_decay=0.01),
                                  lr=args.lr, betas=(0.9, 0.999), weight_decay=0.01)
    scheduler = poly_schedule(optimizer, total_iters=args.iters, warmup_iters=args.warmup)
    start = 0
    if args.resume:
        resumed = resume_checkpoint(last, model, optimizer, scheduler)  # sets rank 0's RNG state
        start = resumed["iteration"]
        restore_rank_rng(resumed["extra"], world)
    elif world.rank:
        torch.manual_seed(rank_seed(args.seed, world.rank))  # DDP copies rank 0's weights to the others
    net = model
    if world.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    autocast = device.type == "cuda" and args.precision != "fp32"
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(enabled=autocast and dtype == torch.float16)
    sampler = InfiniteSampler(len(dataset), seed=args.seed, start=start * args.batch_size, rank=world.rank,
                              world_size=world.size, chunk=args.micro_batch)
    loader = DataLoader(dataset, batch_size=args.micro_batch, num_workers=args.workers, drop_last=True,
                        sampler=sampler, pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
                        generator=torch.Generator().manual_seed(args.seed))  # leaves the global RNG alone
    batches = iter(loader)
    if lead:
        args.out.mkdir(parents=True, exist_ok=True)
        trim_log(args.out / "log.jsonl", start)
    bar = progress_bar(args.iters, "fine-tuning", None if lead else False, initial=start)
    lines = lead and not sys.stderr.isatty()  # no bar there: a plain line every --log-every iterations
    started = time.perf_counter()

    def loss_fn(net: torch.nn.Module, batch: tuple) -> torch.Tensor:
        images, labels = batch
        return decode_loss(net(images), labels)  # through DDP's forward (its gradient hooks)

    with open(args.out / "log.jsonl", "a", encoding="utf-8") if lead else contextlib.nullcontext() as log:
        for iteration in range(start + 1, args.iters + 1):
            micro = fetch(batches, args.accum_steps, device, world)
            loss = train_step(net, micro, optimizer, loss_fn, scaler=scaler,
                              autocast=lambda: torch.autocast(device.type, dtype=dtype, enabled=autocast))
            lr = min(group["lr"] for group in optimizer.param_groups)  # the base lr (the head's is x10)
            scheduler.step()
            value = mean_over_ranks(loss, world.device).item()
            if lead:
                log.write(json.dumps({"iteration": iteration, "loss": value, "lr": lr}) + "\n")
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}", refresh=False)
                bar.update()
                if lines and (iteration % args.log_every == 0 or iteration == args.iters):
                    pace = (time.perf_counter() - started) / (iteration - start)
                    print(f"finetune.py: iteration {iteration}/{args.iters} loss {value:.4f} lr {lr:.2e} "
                          f"({pace:.2f} s/it)", file=sys.stderr, flush=True)
            if iteration % args.save_every == 0 or iteration == args.iters:
                differ = replicas_differ(model, world.device)
                if differ:
                    raise SegnextHubError(f"processes hold different weights after iteration {iteration} "
                                          f"({len(differ)} tensors, e.g. {differ[0]}); nothing saved")
                states = gather_rng_states()
                if lead:
                    log.flush()
                    save_checkpoint(last, model, classes=dataset.classes, palette=dataset.palette,
                                    optimizer=optimizer, scheduler=scheduler, iteration=iteration,
                                    extra={"rank_rng_states": states, "world_size": world.size})
    bar.close()
    if lead:
        print(f"wrote {last} (iteration {args.iters}) and {args.out / 'log.jsonl'}; "
              f"load it with segnext_hub.load({str(last)!r})")


def fetch(batches, count: int, device: torch.device, world) -> list:
    """This process's micro-batches for one step. Reading data is where bad input shows (a
    broken image on one rank): every rank learns of it before any gradient is all-reduced,
    and all stop with one line instead of waiting in a collective."""
    error, micro = None, []
    try:
        micro = [next(batches) for _ in range(count)]
    except SegnextHubError as err:
        error = type(err)(worker_message(err))
    raise_if_any_failed(error, world)
    return [(images.to(device, non_blocking=True), labels.to(device, non_blocking=True)) for images, labels in micro]


def worker_message(err: BaseException) -> str:
    """The message of an error a DataLoader worker raised, without the worker's traceback."""
    message = str(err)
    if message.startswith("Caught "):  # from a DataLoader worker, traceback included
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    return message


def restore_rank_rng(extra: dict, world) -> None:
    """Each process continues its own random stream (rank 0's is restored by resume_checkpoint)."""
    states = extra.get("rank_rng_states") or []
    if world.rank == 0:
        return
    if extra.get("world_size") == world.size and len(states) == world.size:
        torch.set_rng_state(states[world.rank])
    else:  # another process count: the samples still follow the same stream, dropout/NMF draws do not
        torch.manual_seed(rank_seed(int(torch.initial_seed()), world.rank))


def trim_log(path: Path, last_saved: int) -> None:
    """Keep the log lines up to the checkpoint resumed from: the iterations after it run again
    (a half-written last line from a killed run goes too)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["iteration"] <= last_saved:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    path.write_text("".join(kept), encoding="utf-8")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        train(args)
    except SegnextHubError as err:
        print(f"finetune.py: error: {one_line(Exception(worker_message(err)))}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"finetune.py: interrupted; continue with --resume from {args.out / 'last.safetensors'}",
              file=sys.stderr)
        return 130
    finally:
        finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
