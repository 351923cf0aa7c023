"""Training-log parsing: what a published ``.log.json`` says about how a model was made.

Two JSON-lines dialects exist (neither was checked against a real SegNeXt log when this
was written, so both are read defensively):

* mmcv 1.x (MMSeg 0.x, the official repo): an optional first line with ``env_info``,
  ``seed``, ``exp_name`` and sometimes ``config`` (the config text); then records with
  ``mode`` ("train"/"val"), ``iter``, ``lr``, losses, and on validation records
  ``aAcc``/``mIoU``/``mAcc`` as *fractions* (0.415).
* MMEngine (MMSeg 1.x ``scalars.json``, uploaded as ``.log.json``): records with ``step``
  (train records also ``iter``), no ``mode``, no seed line; ``aAcc``/``mIoU``/``mAcc`` as
  *percentages* (41.5).

Metric scale is decided per file, not per dialect: if every aAcc/mIoU/mAcc value in the
file is <= 1 they are fractions and get multiplied by 100, otherwise they are taken as
percentages. aAcc of any real validation is far above 1 %, so the rule cannot confuse a
percentage log for a fraction log. Summaries always report percentages.

Lines that are not JSON objects, or whose iteration or metric values are not numbers, are
skipped and counted rather than fatal: one truncated line in a 160k-iteration log should
not hide the rest.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from ..errors import BadInputError

PathLike = Union[str, "os.PathLike[str]"]

METRIC_KEYS = ("aAcc", "mIoU", "mAcc")
_META_KEYS = ("env_info", "seed", "config", "exp_name", "mmseg_version", "mmcv_version")
# `MD_R=16` in a pretty-printed config, `'MD_R': 16` / `"MD_R": 16` in a dumped dict.
_MD_R_RE = re.compile(r"""\bMD_R['"]?\s*[=:]\s*(\d+)""")
PLOT_HINT = "matplotlib is not installed; pip install 'segnext-hub[plot]'"


@dataclass(frozen=True)
class LogSummary:
    """What a training log records; metrics in percent, iterations as logged."""

    format: str  # "mmcv" | "mmengine"
    metric_scale: Optional[str]  # "fraction" | "percent" as found in the file; None: no val
    best_miou: Optional[float]
    best_miou_iter: Optional[int]
    final_miou: Optional[float]
    final_miou_iter: Optional[int]
    final_aacc: Optional[float]
    final_macc: Optional[float]
    num_iters: Optional[int]  # the largest iteration seen
    seed: Optional[int]
    md_r: Optional[int]  # only when the config text records it
    num_lines: int  # non-blank lines
    skipped_lines: int
    loss_curve: tuple[tuple[int, float], ...] = ()
    miou_curve: tuple[tuple[int, float], ...] = ()
    warnings: tuple[str, ...] = ()
    source: Optional[str] = None

    def as_dict(self, curves: bool = False) -> dict[str, Any]:
        """JSON-ready view; curves are long, so only on request."""
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        if not curves:
            data.pop("loss_curve")
            data.pop("miou_curve")
        else:
            data["loss_curve"] = [list(p) for p in self.loss_curve]
            data["miou_curve"] = [list(p) for p in self.miou_curve]
        data["warnings"] = list(self.warnings)
        return data


@dataclass
class _Accumulator:
    """Mutable state while reading one log; frozen into a LogSummary at the end."""

    num_lines: int = 0
    skipped: int = 0
    votes: dict = field(default_factory=lambda: {"mmcv": 0, "mmengine": 0})
    seed: Optional[int] = None
    config_texts: list = field(default_factory=list)
    max_iter: Optional[int] = None
    losses: list = field(default_factory=list)
    vals: list = field(default_factory=list)  # (iter, {metric: raw value})


# --------------------------------------------------------------------------- parsing


def parse_log(path: PathLike) -> LogSummary:
    """Summarise a ``.log.json`` / ``scalars.json`` file (either dialect)."""
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise BadInputError(f"cannot read training log {target}: {err.strerror or err}") from None
    return parse_log_lines(text.splitlines(), source=str(target))


def parse_log_lines(lines: Iterable[str], source: Optional[str] = None) -> LogSummary:
    """Summarise JSON lines already in memory; ``source`` only names them in errors."""
    where = source or "training log"
    acc = _Accumulator()
    for line in lines:
        if line.strip():
            acc.num_lines += 1
            _take_line(acc, line)
    if acc.num_lines == 0:
        raise BadInputError(f"{where} is empty")
    if not (acc.losses or acc.vals or acc.max_iter is not None or acc.seed is not None or acc.config_texts):
        raise BadInputError(
            f"{where} holds no training-log records ({acc.num_lines} lines, {acc.skipped} malformed)"
        )
    return _summarise(acc, source)


def _take_line(acc: _Accumulator, line: str) -> None:
    try:
        record = json.loads(line)
    except ValueError:
        acc.skipped += 1
        return
    if not isinstance(record, dict):
        acc.skipped += 1
        return
    if _is_meta(record):
        _take_meta(acc, record)
        return
    try:
        _take_record(acc, record)
    except _BadRecord:
        acc.skipped += 1


class _BadRecord(Exception):
    """A JSON object whose iteration or metric values are not usable numbers."""


def _is_meta(record: dict) -> bool:
    has_iter = "iter" in record or "step" in record
    return not has_iter and any(key in record for key in _META_KEYS)


def _take_meta(acc: _Accumulator, record: dict) -> None:
    """The mmcv first line: seed and config text (an env_info string never holds MD_R)."""
    acc.votes["mmcv"] += 1
    seed = record.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        acc.seed = seed
    config = record.get("config")
    if isinstance(config, str):
        acc.config_texts.append(config)
    elif isinstance(config, dict):
        acc.config_texts.append(json.dumps(config))


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _BadRecord
    return float(value)


def _iteration(record: dict) -> int:
    value = record.get("iter", record.get("step"))
    number = _number(value)
    if number < 0 or number != int(number):
        raise _BadRecord
    return int(number)


def _take_record(acc: _Accumulator, record: dict) -> None:
    if "mode" in record:
        acc.votes["mmcv"] += 1
    elif "step" in record:
        acc.votes["mmengine"] += 1
    if "iter" not in record and "step" not in record:
        raise _BadRecord
    it = _iteration(record)
    metrics = {key: _number(record[key]) for key in METRIC_KEYS if key in record}
    loss = _loss_of(record) if record.get("mode", "train") == "train" else None
    acc.max_iter = it if acc.max_iter is None else max(acc.max_iter, it)
    if loss is not None:
        acc.losses.append((it, loss))
    if "mIoU" in metrics:
        acc.vals.append((it, metrics))


def _loss_of(record: dict) -> Optional[float]:
    """The total ``loss``; else the sum of the per-head ``*loss*`` terms, when logged."""
    if "loss" in record:
        return _number(record["loss"])
    parts = [_number(v) for k, v in record.items() if "loss" in k]
    return sum(parts) if parts else None


# --------------------------------------------------------------------------- summary


def _metric_scale(vals: list) -> Optional[str]:
    values = [v for _, metrics in vals for v in metrics.values()]
    if not values:
        return None
    return "fraction" if max(values) <= 1.0 else "percent"


def _md_r(texts: list) -> tuple[Optional[int], list[str]]:
    found = sorted({int(m) for text in texts for m in _MD_R_RE.findall(text)})
    if len(found) > 1:
        return None, [f"config text names several MD_R values {found}; md_r left unset"]
    return (found[0] if found else None), []


def _summarise(acc: _Accumulator, source: Optional[str]) -> LogSummary:
    scale = _metric_scale(acc.vals)
    factor = 100.0 if scale == "fraction" else 1.0
    curve = tuple((it, m["mIoU"] * factor) for it, m in acc.vals)
    best = max(curve, key=lambda p: p[1]) if curve else None  # first of equal maxima
    final_iter, final = acc.vals[-1] if acc.vals else (None, {})
    md_r, warnings = _md_r(acc.config_texts)
    if acc.skipped:
        warnings.append(f"{acc.skipped} of {acc.num_lines} lines were malformed and skipped")
    fmt = "mmcv" if acc.votes["mmcv"] >= acc.votes["mmengine"] else "mmengine"
    if acc.votes["mmcv"] and acc.votes["mmengine"]:
        warnings.append("the log mixes mmcv and MMEngine records")

    def scaled(key: str) -> Optional[float]:
        return final[key] * factor if key in final else None

    return LogSummary(
        format=fmt, metric_scale=scale,
        best_miou=best[1] if best else None, best_miou_iter=best[0] if best else None,
        final_miou=scaled("mIoU"), final_miou_iter=final_iter,
        final_aacc=scaled("aAcc"), final_macc=scaled("mAcc"),
        num_iters=acc.max_iter, seed=acc.seed, md_r=md_r,
        num_lines=acc.num_lines, skipped_lines=acc.skipped,
        loss_curve=tuple(acc.losses), miou_curve=curve,
        warnings=tuple(warnings), source=source,
    )


def format_summary(summary: LogSummary) -> str:
    """Human-readable lines for ``segnext-hub log``; unknown values print as '-'."""

    def show(value: Any, unit: str = "") -> str:
        if value is None:
            return "-"
        return f"{value:.2f}{unit}" if isinstance(value, float) else f"{value}{unit}"

    def at(iteration: Optional[int]) -> str:
        return f" (iter {iteration})" if iteration is not None else ""

    rows = [
        ("format", f"{summary.format}, metrics logged as {summary.metric_scale or '-'}"),
        ("best mIoU", show(summary.best_miou, "%") + at(summary.best_miou_iter)),
        ("final mIoU", show(summary.final_miou, "%") + at(summary.final_miou_iter)),
        ("final aAcc", show(summary.final_aacc, "%")),
        ("final mAcc", show(summary.final_macc, "%")),
        ("iterations", show(summary.num_iters)),
        ("training seed", show(summary.seed) if summary.seed is not None else "not recorded"),
        ("head MD_R", show(summary.md_r) if summary.md_r is not None else "not recorded"),
        ("lines", f"{summary.num_lines} ({summary.skipped_lines} skipped)"),
    ]
    text = "\n".join(f"{label:<14}{value}" for label, value in rows)
    return text + "".join(f"\nwarning: {w}" for w in summary.warnings)


# --------------------------------------------------------------------------- plotting


def plot_log(summary: LogSummary, out_png: PathLike) -> Path:
    """Loss and mIoU against iteration, side by side, as a PNG.

    Uses matplotlib's object API with the Agg canvas, so it neither needs a display nor
    switches the backend of a caller's pyplot session.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise BadInputError(PLOT_HINT) from None
    if not summary.loss_curve and not summary.miou_curve:
        raise BadInputError("the training log has neither loss nor mIoU values to plot")
    from ..fileio import atomic_writer

    figure = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(figure)
    _draw(figure.add_subplot(1, 2, 1), summary.loss_curve, "loss", "training loss")
    _draw(figure.add_subplot(1, 2, 2), summary.miou_curve, "mIoU (%)", "validation mIoU", marker="o")
    if summary.source:
        figure.suptitle(Path(summary.source).name, fontsize=9)
    figure.tight_layout()
    target = Path(out_png)
    with atomic_writer(target, force=True) as handle:
        figure.savefig(handle, format="png")
    return target


def _draw(axes: Any, curve: tuple, ylabel: str, title: str, marker: Optional[str] = None) -> None:
    axes.set_title(title)
    axes.set_xlabel("iteration")
    axes.set_ylabel(ylabel)
    if curve:
        xs, ys = zip(*sorted(curve))
        axes.plot(xs, ys, marker=marker, markersize=3, linewidth=1)
    else:
        axes.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axes.transAxes)
    axes.grid(True, alpha=0.3)
