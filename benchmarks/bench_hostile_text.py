"""Time to read adversarial config text and training logs, against 1 MB of benign config text.

Config text reaches segnext-hub from files nobody vetted: a checkpoint's ``meta.config``
(``segnext-convert``, ``load(path)``, ``predict``), a training log's config dump (``log``,
``convert --log``) and the log a mirror serves during ``pull``. Each shape below is read
the way those paths read it (``md_r_from_config`` + ``seed_from_config`` on the text, and
``read_log_header`` + ``parse_log_text`` on a log holding it as its ``Config:`` dump),
at 12/24/48/360 KB and 1 MB, with the benign 1 MB baseline measured in the same run.
Before the bounded scans, 12/24/48 KB of ``ham_kwargs=(`` took 3.8/13/49 s and 360 KB
never finished (issue 19, finding 3). Target: every 1 MB input under 1 s.

    python benchmarks/bench_hostile_text.py [--repeats 3] [--sizes 12,24,48,360,1024]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from segnext_hub.conversion.config_text import md_r_from_config, seed_from_config  # noqa: E402
from segnext_hub.conversion.log_header import read_log_header  # noqa: E402
from segnext_hub.tasks.logs import parse_log_text  # noqa: E402

TARGET_S = 1.0
BENIGN = """norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    type='EncoderDecoder',
    backbone=dict(type='MSCAN', embed_dims=[32, 64, 160, 256], mlp_ratios=[8, 8, 4, 4], drop_path_rate=0.1,
                  depths=[3, 3, 5, 2], norm_cfg=dict(type='SyncBN', requires_grad=True)),
    decode_head=dict(type='LightHamHead', in_channels=[64, 160, 256], in_index=[1, 2, 3], channels=256,
                     ham_channels=256, dropout_ratio=0.1, num_classes=150, norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                     ham_kwargs=dict(MD_S=1, MD_R=16, train_steps=6, eval_steps=7, inv_t=100, rand_init=True)),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
optimizer = dict(type='AdamW', lr=6e-05, betas=(0.9, 0.999), weight_decay=0.01)
seed = 0
"""

# Shape name -> one repeated unit (the text is the unit repeated to the size asked).
SHAPES: dict[str, str] = {
    "ham_kwargs=( unclosed": "ham_kwargs=(",
    "ham_kwargs=dict( + quote": "ham_kwargs=dict('",
    "randomness = dict( lines": "randomness = dict(\n",
    "md_r=1 keys in one dict": "ham_kwargs=dict(" + "md_r=1, " * 64,
    "nested ( after ham_kwargs": "ham_kwargs=dict(" + "(" * 256,
    "escaped quotes": "ham_kwargs=dict(x='\\'" + "\\'" * 32,
    "LightHamHead words": "LightHamHead ",
}


def text_of(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def as_log(config: str) -> str:
    """A text training log whose ``Config:`` dump is ``config``."""
    return ("2023-02-13 16:51:25,072 - mmseg - INFO - Environment info:\n  seed: 0\n"
            "2023-02-13 16:51:25,100 - mmseg - INFO - Config:\n" + config +
            "\n2023-02-13 16:51:26,000 - mmseg - INFO - Iter [50/160000]\tlr: 6.000e-05, loss: 2.0000\n")


def read_config_text(text: str) -> None:
    md_r_from_config(text)
    seed_from_config(text)


def read_log(text: str) -> None:
    read_log_header(text)
    parse_log_text(text, "bench log")


def best_of(func: Callable[[str], None], text: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        func(text)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="12,24,48,360,1024", help="KB, comma-separated")
    args = parser.parse_args()
    sizes = [int(s) * 1024 for s in args.sizes.split(",")]
    baseline_text = text_of(BENIGN, 1 << 20)
    baseline = {"config": best_of(read_config_text, baseline_text, args.repeats),
                "log": best_of(read_log, as_log(baseline_text), args.repeats)}
    print(f"{'input':<28} {'KB':>6} {'config s':>9} {'x benign':>9} {'log s':>8} {'x benign':>9}")
    print(f"{'benign config (baseline)':<28} {1024:>6} {baseline['config']:>9.4f} {1.0:>9.2f} "
          f"{baseline['log']:>8.4f} {1.0:>9.2f}")
    worst = 0.0
    for shape, unit in SHAPES.items():
        for size in sizes:
            text = text_of(unit, size)
            config_s = best_of(read_config_text, text, args.repeats)
            log_s = best_of(read_log, as_log(text), args.repeats)
            if size >= 1 << 20:
                worst = max(worst, config_s, log_s)
            print(f"{shape:<28} {size // 1024:>6} {config_s:>9.4f} {config_s / baseline['config']:>9.2f} "
                  f"{log_s:>8.4f} {log_s / baseline['log']:>9.2f}")
    verdict = "met" if worst < TARGET_S else "MISSED"
    print(f"\nslowest 1 MB adversarial input: {worst:.3f} s (target < {TARGET_S:.0f} s: {verdict})")


if __name__ == "__main__":
    main()
