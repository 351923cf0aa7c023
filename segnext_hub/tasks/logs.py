"""Training-log parsing: what a run's log says about how a model was made and how it scored.

Every dialect real MMSeg runs write is read (checked on committed logs, see
``tests/data/logs/SOURCES.md``):

* mmcv 1.x ``.log.json`` (MMSeg 0.x, the official SegNeXt repo): a first record with
  ``env_info``/``seed``/``config`` (sometimes ``{}``), then ``mode`` train/val records;
  metrics are fractions (0.7434).
* MMEngine ``vis_data/<stamp>.json`` (= ``scalars.json``): records with ``step``;
  evaluation records carry ``aAcc``/``mIoU``/``mAcc`` in percent at their training step.
* One-record results of a test run: MMEngine's ``tools/test.py`` JSON (percent, no
  ``step``) and MMSeg 0.x's ``eval_single_scale_<stamp>.json`` (``{"config", "metric"}``,
  fractions).
* Text ``.log`` files of mmcv (``Iter [N/M]``, ``Iter(val) [K]``) and MMEngine
  (``Iter(train) [N/M]``, ``Iter(val) [k/k]  aAcc: ..``).

The iteration an evaluation belongs to is the subtle part. From mmcv 1.3.4 on (and in
every MMSeg 0.x release that sets ``eval_iter_num``) a val record's ``iter`` is the number
of validation batches, not the training iteration, which is then that of the train record
logged just before it; older mmcv logged the training iteration itself. MMEngine text logs
always show the batch count; its JSON logs give the training step. See
:func:`_mmcv_eval_rule` for how a file is told apart.

Metrics are reported in percent, rounded to two decimals when read (a fraction 0.3913
becomes 39.13, never 39.129999999999995). The seed and ``MD_R`` come from
:mod:`segnext_hub.conversion.config_text`, the one reader of config text.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from ..conversion.log_header import LOG_LINE, LogHeader, read_log_header, record_from_header
from ..errors import BadInputError
from ..fileio import MAX_LOG_BYTES, read_bounded

PathLike = Union[str, "os.PathLike[str]"]

METRIC_KEYS = ("aAcc", "mIoU", "mAcc")
PLOT_HINT = "matplotlib is not installed; pip install 'segnext-hub[plot]'"
RULE_LOGGED = "logged"  # the record's own iteration is the training iteration
RULE_PREVIOUS = "previous train record"  # it counts val batches; use the train record before


@dataclass(frozen=True)
class LogSummary:
    """What a training (or test) log records; metrics in percent, true training iterations."""

    format: str  # "mmcv" | "mmengine": the runner family that wrote it
    metric_scale: Optional[str]  # "fraction" | "percent" as found in the file; None: no eval
    best_miou: Optional[float]
    best_miou_iter: Optional[int]
    final_miou: Optional[float]
    final_miou_iter: Optional[int]
    final_aacc: Optional[float]
    final_macc: Optional[float]
    num_iters: Optional[int]  # the largest training iteration seen
    seed: Optional[int]
    md_r: Optional[int]  # only when the config text records it
    num_lines: int  # non-blank lines
    skipped_lines: int
    loss_curve: tuple[tuple[int, float], ...] = ()
    miou_curve: tuple[tuple[int, float], ...] = ()
    warnings: tuple[str, ...] = ()
    source: Optional[str] = None
    dialect: str = ""  # mmcv-json | mmengine-json | mmcv-text | mmengine-text | *-test-json
    kind: str = "training"  # "training" | "test" (a single evaluation, no training)
    best_aacc: Optional[float] = None  # at the best-mIoU evaluation
    best_macc: Optional[float] = None
    num_evals: int = 0
    eval_iter_rule: Optional[str] = None  # RULE_LOGGED | RULE_PREVIOUS
    md_r_source: Optional[str] = None
    md_r_note: Optional[str] = None
    seed_source: Optional[str] = None
    mmcv_version: Optional[str] = None
    mmseg_version: Optional[str] = None
    mmengine_version: Optional[str] = None

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
class _Eval:
    logged: Optional[int]  # the iteration the record itself carries (maybe a batch count)
    metrics: dict  # raw values, as logged
    prev_train: Optional[int] = None
    next_train: Optional[int] = None
    iteration: Optional[int] = None
    test: bool = False  # from a test run (``Iter(test)``), not a validation during training


@dataclass
class _Parsed:
    """Mutable state while reading one log; frozen into a LogSummary at the end."""

    dialect: str
    family: str
    num_lines: int = 0
    skipped: int = 0
    losses: list = field(default_factory=list)  # (iteration, loss)
    evals: list = field(default_factory=list)  # _Eval, in file order
    last_train: Optional[int] = None
    max_iter: Optional[int] = None
    eval_rule: Optional[str] = None  # fixed by the dialect, else decided later
    kind: str = "training"
    warnings: list = field(default_factory=list)

    def train(self, iteration: int, loss: Optional[float]) -> None:
        for pending in reversed(self.evals):  # evals logged since the previous train record
            if pending.next_train is not None:
                break
            pending.next_train = iteration
        self.last_train = iteration
        self.max_iter = iteration if self.max_iter is None else max(self.max_iter, iteration)
        if loss is not None:
            self.losses.append((iteration, loss))

    def evaluation(self, logged: Optional[int], metrics: dict, test: bool = False) -> None:
        self.evals.append(_Eval(logged, metrics, prev_train=self.last_train, test=test))


class _BadRecord(Exception):
    """A record whose iteration or metric values are not usable numbers."""


# --------------------------------------------------------------------------- entry points


def parse_log(path: PathLike) -> LogSummary:
    """Summarise a training or test log of any dialect above.

    Raises:
        BadInputError: one line naming the file: unreadable, not a regular file (a FIFO or
            device would block or never end), over :data:`MAX_LOG_BYTES`, or not a log.
    """
    target = Path(path)
    data = read_bounded(target, "training log", MAX_LOG_BYTES)
    return parse_log_bytes(data, str(target))


def parse_log_bytes(data: bytes, source: str) -> LogSummary:
    """Summarise a log already read (a cache entry's, read inside the entry); ``source``
    names it in errors."""
    if b"\x00" in data[:4096]:
        raise BadInputError(f"{source} is not a training log (binary data)")
    return parse_log_text(data.decode("utf-8-sig", errors="replace"), source=source)


def parse_log_lines(lines: Iterable[str], source: Optional[str] = None) -> LogSummary:
    """Summarise log lines already in memory; ``source`` only names them in errors."""
    return parse_log_text("\n".join(lines), source=source)


def parse_log_text(text: str, source: Optional[str] = None) -> LogSummary:
    """Summarise a whole log held as one string (JSON lines, one JSON document, or text)."""
    where = source or "training log"
    lines = text.splitlines()
    first = next((line.strip() for line in lines if line.strip()), "")
    if not first:
        raise BadInputError(f"{where} is empty")
    if first.startswith(("{", "[{")) or first == "[":
        parsed = _parse_json(text, lines, where)
    else:
        parsed = _parse_text(lines)
    header = read_log_header(text)
    if not (parsed.losses or parsed.evals or parsed.max_iter is not None or header.configs or header.seeds):
        raise BadInputError(
            f"{where} holds no training-log records ({parsed.num_lines} lines, {parsed.skipped} malformed)")
    return _summarise(parsed, header, source)


# --------------------------------------------------------------------------- JSON dialects


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _BadRecord
    return float(value)


def _count(value: Any) -> int:
    number = _number(value)
    if number < 0 or number != int(number):
        raise _BadRecord
    return int(number)


def _metrics(record: dict) -> dict:
    return {key: _number(record[key]) for key in METRIC_KEYS if key in record}


def _loss_of(record: dict) -> Optional[float]:
    """The total ``loss``; else the sum of the per-head ``*loss*`` terms, when logged."""
    if "loss" in record:
        return _number(record["loss"])
    parts = [_number(v) for k, v in record.items() if "loss" in k]
    return sum(parts) if parts else None


def _parse_json(text: str, lines: list, where: str) -> _Parsed:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        document = None  # JSON lines (or damaged, or nested past the parser's depth): line by line
    if isinstance(document, dict) and not any(k in document for k in ("mode", "iter", "step")):
        single = _single_result(document, where)
        if single is not None:
            return single
    parsed = _Parsed(dialect="mmcv-json", family="mmcv")
    votes = {"mmcv": 0, "mmengine": 0}
    for line in lines:
        if not line.strip():
            continue
        parsed.num_lines += 1
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise _BadRecord
            _take_json_record(parsed, record, votes)
        except (ValueError, RecursionError, _BadRecord):
            parsed.skipped += 1
    if votes["mmengine"] > votes["mmcv"]:
        parsed.dialect, parsed.family, parsed.eval_rule = "mmengine-json", "mmengine", RULE_LOGGED
    if votes["mmcv"] and votes["mmengine"]:
        parsed.warnings.append("the log mixes mmcv and MMEngine records")
    return parsed


def _single_result(document: dict, where: str) -> Optional[_Parsed]:
    """A whole-file result of a test run: MMSeg 0.x ``{"config", "metric"}`` or MMEngine's."""
    if isinstance(document.get("metric"), dict) and "mIoU" in document["metric"]:
        parsed = _Parsed(dialect="mmseg-test-json", family="mmcv", kind="test", num_lines=1)
        raw = document["metric"]
    elif "mIoU" in document:
        parsed = _Parsed(dialect="mmengine-test-json", family="mmengine", kind="test", num_lines=1)
        raw = document
    else:
        return None
    try:
        parsed.evaluation(None, _metrics(raw))
    except _BadRecord:
        raise BadInputError(f"{where}: the test result's metrics are not numbers") from None
    parsed.eval_rule = RULE_LOGGED
    return parsed


def _take_json_record(parsed: _Parsed, record: dict, votes: dict) -> None:
    if not record:
        return  # mmcv writes ``{}`` for an empty meta; nothing to read, nothing wrong
    if not any(k in record for k in ("mode", "iter", "step")):
        if any(k in record for k in ("env_info", "seed", "config", "exp_name", "mmseg_version")):
            votes["mmcv"] += 1
            return  # the header record; read_log_header handles it
        raise _BadRecord
    engine = "step" in record and "mode" not in record
    votes["mmengine" if engine else "mmcv"] += 1
    iteration = _count(record["step"] if engine else record.get("iter", record.get("step")))
    if "mIoU" in record:  # an evaluation, whatever ``mode`` says (mode is wrong in some runs)
        parsed.evaluation(iteration, _metrics(record))
    elif record.get("mode", "train") == "train":
        parsed.train(iteration, _loss_of(record))


# --------------------------------------------------------------------------- text dialects

_PAIR = re.compile(r"([\w./-]+): (-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?![\w:])")
_MMCV_TRAIN = re.compile(r"^Iter \[(\d+)/(\d+)\]")
_MMCV_EPOCH = re.compile(r"^Epoch \[(\d+)\]\[(\d+)/(\d+)\]")
_MMCV_VAL = re.compile(r"^(?:Iter|Epoch)\(val\) (?:\[(\d+)\])?\[(\d+)\]")
_ENGINE_TRAIN = re.compile(r"^Iter\(train\) \[\s*(\d+)/(\d+)\]")
_ENGINE_EPOCH = re.compile(r"^Epoch\(train\)\s*\[(\d+)\]\[\s*(\d+)/(\d+)\]")
_ENGINE_EVAL = re.compile(r"^(?:Iter|Epoch)\((val|test)\)\s*(?:\[\d+\])?\[\s*(\d+)/(\d+)\]")


def _pairs(message: str) -> dict:
    return {k: float(v) for k, v in _PAIR.findall(message)}


def _parse_text(lines: list) -> _Parsed:
    parsed = _Parsed(dialect="mmcv-text", family="mmcv")
    engine = any(" - mmengine - " in line[:60] for line in lines[:200])
    if engine:
        parsed.dialect, parsed.family, parsed.eval_rule = "mmengine-text", "mmengine", RULE_PREVIOUS
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        parsed.num_lines += 1
        head = LOG_LINE.match(line)
        if not head:
            continue
        message = line[head.end():]
        if "Iter" not in message[:12] and "Epoch" not in message[:12]:
            continue
        if message.startswith(("Iter(val)", "Epoch(val)", "Iter(test)", "Epoch(test)")) \
                and "mIoU" not in message and i + 1 < len(lines) and not LOG_LINE.match(lines[i + 1]):
            message += " " + lines[i + 1]  # some versions wrap the metrics onto the next line
        try:
            _take_text_line(parsed, message, engine)
        except (ValueError, _BadRecord):
            parsed.skipped += 1
    tests = [ev for ev in parsed.evals if ev.test]
    if tests and parsed.max_iter is None:
        parsed.kind = "test"
    elif tests:  # a test run appended to a training log: not one of its validations
        parsed.evals = [ev for ev in parsed.evals if not ev.test]
        parsed.warnings.append(f"{len(tests)} test-run result(s) after training were not counted")
    return parsed


def _take_text_line(parsed: _Parsed, message: str, engine: bool) -> None:
    """Read one ``Iter``/``Epoch`` log message of either runner family."""
    if engine:
        match = _ENGINE_TRAIN.match(message)
        epoch = _ENGINE_EPOCH.match(message) if not match else None
        if match or epoch:
            iteration = int(match.group(1)) if match else \
                (int(epoch.group(1)) - 1) * int(epoch.group(3)) + int(epoch.group(2))
            parsed.train(iteration, _loss_of(_pairs(message)))
            return
        match = _ENGINE_EVAL.match(message)
        if match and "mIoU" in message:
            values = _pairs(message[match.end():])
            parsed.evaluation(int(match.group(2)), _metrics(values), test=match.group(1) == "test")
        return
    match, epoch = _MMCV_TRAIN.match(message), _MMCV_EPOCH.match(message)
    if match or epoch:
        iteration = int(match.group(1)) if match else \
            (int(epoch.group(1)) - 1) * int(epoch.group(3)) + int(epoch.group(2))
        parsed.train(iteration, _loss_of(_pairs(message)))
        return
    match = _MMCV_VAL.match(message)
    if match and "mIoU" in message:
        parsed.evaluation(int(match.group(2)), _metrics(_pairs(message[match.end():])))


# --------------------------------------------------------------------------- evaluation iterations


def _version(text: Optional[str]) -> Optional[tuple[int, ...]]:
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(g) for g in match.groups()) if match else None


def _mmcv_eval_rule(evals: list, mmcv_version: Optional[str]) -> tuple[str, Optional[str]]:
    """Decide whether an mmcv log's val ``iter`` is the training iteration or a batch count.

    Only evaluations whose logged value exceeds the previous train record's are in
    question (a smaller value can only be a batch count; an equal one gives the same
    answer either way). Evidence, strongest first: the mmcv version (< 1.3.4 logged the
    training iteration, >= 1.4 the batch count); a batch count already proven elsewhere in
    the file, or the same value at every evaluation while training advanced; values that
    rise and match the next train record, as mmcv 1.3 wrote them (the val record before
    that iteration's train record). Returns the rule and, when it was a guess, a warning.
    """
    version = _version(mmcv_version)
    if version is not None and version < (1, 3, 4):
        return RULE_LOGGED, None
    if version is not None and version >= (1, 4, 0):
        return RULE_PREVIOUS, None
    known = [e for e in evals if e.logged is not None and e.prev_train is not None]
    if any(e.logged < e.prev_train for e in known):
        return RULE_PREVIOUS, None
    logged = [e.logged for e in evals if e.logged is not None]
    trains = {e.prev_train for e in evals}
    if len(logged) >= 2 and len(set(logged)) == 1 and len(trains) > 1:
        return RULE_PREVIOUS, None
    rising = all(b > a for a, b in zip(logged, logged[1:]))
    matches = all(e.next_train is None or e.logged == e.next_train for e in evals if e.logged is not None)
    if rising and matches and any(e.next_train is not None for e in evals):
        return RULE_LOGGED, None
    ambiguous = [e for e in known if e.logged > e.prev_train]
    if not ambiguous:
        return RULE_PREVIOUS, None
    return RULE_PREVIOUS, ("could not tell whether val records give the training iteration or "
                           "the number of val batches (no mmcv version logged); assumed batches")


def _assign_iterations(parsed: _Parsed, header: LogHeader) -> None:
    rule = parsed.eval_rule
    if rule is None:
        rule, warning = _mmcv_eval_rule(parsed.evals, header.version("mmcv"))
        if warning:
            parsed.warnings.append(warning)
        parsed.eval_rule = rule
    for ev in parsed.evals:
        if parsed.kind == "test":
            ev.iteration = None
        elif rule == RULE_LOGGED and parsed.family == "mmengine":
            ev.iteration = ev.logged
        elif rule == RULE_LOGGED and (ev.prev_train is None or (ev.logged or 0) >= ev.prev_train):
            ev.iteration = ev.logged
        else:
            ev.iteration = ev.prev_train
    if parsed.family == "mmengine" and parsed.eval_rule == RULE_LOGGED:
        steps = [ev.iteration for ev in parsed.evals if ev.iteration is not None]
        if steps and parsed.max_iter is not None:
            parsed.max_iter = max(parsed.max_iter, max(steps))


# --------------------------------------------------------------------------- summary


def _metric_scale(evals: list) -> Optional[str]:
    """Fractions when every aAcc/mIoU/mAcc is <= 1, else percent.

    Per file rather than per dialect, so a run that logged percentages through mmcv is not
    multiplied by 100; an aAcc of at most 1 % never comes out of a real evaluation.
    """
    values = [v for ev in evals for v in ev.metrics.values()]
    if not values:
        return None
    return "fraction" if max(values) <= 1.0 else "percent"


def _summarise(parsed: _Parsed, header: LogHeader, source: Optional[str]) -> LogSummary:
    _assign_iterations(parsed, header)
    scale = _metric_scale(parsed.evals)
    factor = 100.0 if scale == "fraction" else 1.0

    def pct(ev: Optional[_Eval], key: str) -> Optional[float]:
        return round(ev.metrics[key] * factor, 2) if ev is not None and key in ev.metrics else None

    scored = [ev for ev in parsed.evals if "mIoU" in ev.metrics]
    best = max(scored, key=lambda ev: ev.metrics["mIoU"]) if scored else None  # first of equals
    final = scored[-1] if scored else None
    record = record_from_header(header)
    seed_source = record.seed_source
    if parsed.kind == "test" and seed_source:
        seed_source += ", of the test run"  # a test log's seed is not proof of the training seed
    warnings = list(parsed.warnings) + list(record.notes)
    if parsed.skipped:
        warnings.append(f"{parsed.skipped} of {parsed.num_lines} lines were malformed and skipped")
    return LogSummary(
        format=parsed.family, metric_scale=scale,
        best_miou=pct(best, "mIoU"), best_miou_iter=best.iteration if best else None,
        final_miou=pct(final, "mIoU"), final_miou_iter=final.iteration if final else None,
        final_aacc=pct(final, "aAcc"), final_macc=pct(final, "mAcc"),
        num_iters=parsed.max_iter, seed=record.seed, md_r=record.md_r,
        num_lines=parsed.num_lines, skipped_lines=parsed.skipped,
        loss_curve=tuple(parsed.losses),
        miou_curve=tuple((ev.iteration, pct(ev, "mIoU")) for ev in scored if ev.iteration is not None),
        warnings=tuple(warnings), source=source, dialect=parsed.dialect, kind=parsed.kind,
        best_aacc=pct(best, "aAcc"), best_macc=pct(best, "mAcc"), num_evals=len(scored),
        eval_iter_rule=parsed.eval_rule if scored and parsed.kind == "training" else None,
        md_r_source=record.md_r_source, md_r_note=record.md_r_note, seed_source=seed_source,
        mmcv_version=header.version("mmcv"), mmseg_version=header.version("mmseg"),
        mmengine_version=header.version("mmengine"),
    )


_RULE_TEXT = {RULE_LOGGED: ", at the training iteration each logged",
              RULE_PREVIOUS: ", at the train record logged before each (val records count batches)"}


def format_summary(summary: LogSummary) -> str:
    """Human-readable lines for ``segnext-hub log``; unknown values print as '-'."""

    def show(value: Any, unit: str = "") -> str:
        if value is None:
            return "-"
        return f"{value:.2f}{unit}" if isinstance(value, float) else f"{value}{unit}"

    def at(iteration: Optional[int]) -> str:
        return f" (iter {iteration})" if iteration is not None else ""

    def sourced(value: Any, source: Optional[str], note: Optional[str] = None) -> str:
        if value is None:
            return "not recorded"
        detail = "; ".join(part for part in (source, note) if part)
        return f"{value} ({detail})" if detail else str(value)

    versions = ", ".join(f"{name} {v}" for name, v in (("mmcv", summary.mmcv_version),
                         ("mmseg", summary.mmseg_version), ("mmengine", summary.mmengine_version)) if v)
    rows = [
        ("format", f"{summary.dialect or summary.format} ({summary.kind}), metrics logged as "
                   f"{summary.metric_scale or '-'}" + (f"; {versions}" if versions else "")),
        ("best mIoU", show(summary.best_miou, "%") + at(summary.best_miou_iter)),
        ("final mIoU", show(summary.final_miou, "%") + at(summary.final_miou_iter)),
        ("final aAcc", show(summary.final_aacc, "%")),
        ("final mAcc", show(summary.final_macc, "%")),
        ("evaluations", str(summary.num_evals) + _RULE_TEXT.get(summary.eval_iter_rule or "", "")),
        ("iterations", show(summary.num_iters)),
        ("training seed", sourced(summary.seed, summary.seed_source)),
        ("head MD_R", sourced(summary.md_r, summary.md_r_source, summary.md_r_note)),
        ("lines", f"{summary.num_lines} ({summary.skipped_lines} skipped)"),
    ]
    text = "\n".join(f"{label:<14}{value}" for label, value in rows)
    return text + "".join(f"\nwarning: {w}" for w in summary.warnings)


# --------------------------------------------------------------------------- plotting


def plot_log(summary: LogSummary, out_png: PathLike) -> Path:
    """Loss and mIoU against the true training iteration, side by side, as a PNG.

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
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axes.set_title(title)
    axes.set_xlabel("training iteration")
    axes.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k" if abs(x) >= 1000 else f"{x:g}"))
    axes.set_ylabel(ylabel)
    if curve:
        xs, ys = zip(*sorted(curve))
        axes.plot(xs, ys, marker=marker, markersize=3, linewidth=1)
    else:
        axes.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axes.transAxes)
    axes.grid(True, alpha=0.3)
