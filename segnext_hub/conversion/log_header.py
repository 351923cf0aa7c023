"""The head of a training log: the config text, seeds and versions printed before training.

Every dialect SegNeXt runs wrote: mmcv's ``.log.json`` (a first record with ``env_info``,
``seed``, ``config``), mmcv and MMEngine text logs (an environment block, a ``Config:``
dump, ``Set random seed to N``). ``tasks.logs`` parses the rest of a log; the record the
header gives (MD_R, seed) is the second witness after the checkpoint's own.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..fileio import read_bounded
from .config_text import md_r_from_config, plain_classes, plain_int, plain_palette, plain_str, seed_from_config
from .record import Picker, Record, build_record

PathLike = Union[str, "os.PathLike[str]"]

# --------------------------------------------------------------------------- training logs

# "2023-02-13 16:51:25,072 - mmseg - INFO - " (mmcv) / "2023/02/15 05:04:36 - mmengine - INFO - "
# and the short "06/16 08:23:02 - mmengine - INFO - " MMEngine also writes.
LOG_LINE = re.compile(
    r"^(?:\d{4}[-/])?\d{2}[-/]\d{2} \d{2}:\d{2}:\d{2}(?:,\d+)? - [\w.]+ - "
    r"(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) - ")
_SEED_SET = re.compile(r"Set random seed to (\d+)")
_ENV_SEED = re.compile(r"^\s+seed: (\d+)\s*$")
_VERSION = re.compile(r"^\s*(MMCV|MMSegmentation|MMEngine):\s*(\S+)")
_VERSION_KEYS = {"MMCV": "mmcv", "MMSegmentation": "mmseg", "MMEngine": "mmengine"}
_TRAIN_STARTS = ("Iter [", "Epoch [", "Iter(train)", "Epoch(train)")


@dataclass(frozen=True)
class LogHeader:
    """What a training log says about the run before the first iteration.

    ``configs`` and ``seeds`` keep every copy found with where it was found, so callers
    can both pick one and notice when copies disagree. ``versions`` maps "mmcv",
    "mmseg", "mmengine" to the version strings the log printed.
    """

    configs: tuple[tuple[object, str], ...] = ()
    seeds: tuple[tuple[int, str], ...] = ()
    versions: tuple[tuple[str, str], ...] = ()
    classes: Optional[tuple[str, ...]] = None
    palette: Optional[tuple[tuple[int, int, int], ...]] = None

    def version(self, package: str) -> Optional[str]:
        return dict(self.versions).get(package)


def _versions_in(text: str, found: dict[str, str]) -> None:
    for line in text.splitlines():
        match = _VERSION.match(line)
        if match:
            found.setdefault(_VERSION_KEYS[match.group(1)], match.group(2))


def _is_meta_record(record: dict) -> bool:
    return not any(k in record for k in ("mode", "iter", "step")) and any(
        k in record for k in ("env_info", "seed", "config", "exp_name", "mmseg_version", "mmcv_version"))


def _json_header(lines: Sequence[str]) -> LogHeader:
    configs, seeds, versions = [], [], {}
    classes = palette = None
    for line in lines:
        stripped = line.strip()
        if not stripped.startswith("{") or '"mode"' in stripped or '"step"' in stripped:
            continue
        try:
            record = json.loads(stripped)
        except (ValueError, RecursionError):  # a record nested past the parser's depth is no header
            continue
        if not isinstance(record, dict) or not _is_meta_record(record):
            continue
        seed = plain_int(record.get("seed"))
        if seed is not None:
            seeds.append((seed, "training log meta.seed"))
        config = record.get("config")
        if plain_str(config) or isinstance(config, dict):
            configs.append((config, "training log meta.config"))
        for key in ("mmcv_version", "mmseg_version"):
            if plain_str(record.get(key)):
                versions.setdefault(key[:-8], record[key])
        if plain_str(record.get("env_info")):
            _versions_in(record["env_info"], versions)
        classes = classes or plain_classes(record.get("CLASSES"))
        palette = palette or plain_palette(record.get("PALETTE"))
    return LogHeader(tuple(configs), tuple(seeds), tuple(sorted(versions.items())), classes, palette)


def _config_dump(lines: Sequence[str], start: int) -> str:
    """The config text printed after a "Config:" log line, up to the next log line."""
    first = lines[start].split("Config:", 1)[1].strip()
    body = [first] if first else []
    for line in lines[start + 1:]:
        if LOG_LINE.match(line):
            break
        body.append(line)
    return "\n".join(body).strip("\n")


def _text_header(lines: Sequence[str]) -> LogHeader:
    configs, seeds, versions = [], [], {}
    in_log_line = False
    for i, line in enumerate(lines):
        head = LOG_LINE.match(line)
        if head:
            in_log_line = True
            message = line[head.end():]
            if message.startswith("Config:"):
                configs.append((_config_dump(lines, i), "training log config dump"))
                in_log_line = False
            seed = _SEED_SET.search(message)
            if seed:
                seeds.append((int(seed.group(1)), "training log 'Set random seed to' line"))
            if message.startswith(_TRAIN_STARTS):
                break  # training started: the header is over
            continue
        if not in_log_line:
            continue
        seed = _ENV_SEED.match(line)
        if seed:
            seeds.append((int(seed.group(1)), "training log environment block"))
        _versions_in(line, versions)
    return LogHeader(tuple(configs), tuple(seeds), tuple(sorted(versions.items())))


def read_log_header(text: str) -> LogHeader:
    """Config text, seeds and versions from the head of a training log of any dialect.

    JSON-lines logs (mmcv's ``.log.json``) keep them in a first record with ``env_info``,
    ``seed`` and ``config``; text logs print an environment block (MMEngine's has
    ``seed: N``), a ``Config:`` dump and mmcv's ``Set random seed to N``. MMEngine's
    ``scalars.json`` has none of it and gives an empty header.
    """
    lines = text.splitlines()
    first = next((line.strip() for line in lines if line.strip()), "")
    return _json_header(lines) if first.startswith("{") else _text_header(lines)


def record_from_header(header: LogHeader) -> Record:
    """A Record from a parsed log header: the first config/seed wins, disagreements noted."""
    md_r, seed = Picker("md_r"), Picker("seed")
    classes, palette = Picker("classes"), Picker("palette")
    for config, where in header.configs:
        found = md_r_from_config(config)
        if found:
            md_r.offer(found.value, where, found.note)
    for value, where in header.seeds:
        seed.offer(value, where)
    for config, where in header.configs:
        found = seed_from_config(config)
        if found:
            seed.offer(found.value, f"{where} ({found.note})")
    classes.offer(header.classes, "training log meta.CLASSES")
    palette.offer(header.palette, "training log meta.PALETTE")
    return build_record(md_r, seed, classes, palette)


def record_from_log(log: Union[PathLike, Any]) -> Record:
    """MD_R and seed (and classes, when logged) from a training log.

    ``log`` is a path, or a summary from ``tasks.logs.parse_log`` (anything with ``md_r``
    and ``seed`` attributes), which is used as is so a log is not read twice.
    """
    if hasattr(log, "md_r") and hasattr(log, "seed"):
        return Record(md_r=plain_int(log.md_r), md_r_source=getattr(log, "md_r_source", None),
                      md_r_note=getattr(log, "md_r_note", None),
                      seed=plain_int(log.seed), seed_source=getattr(log, "seed_source", None))
    path = Path(log)
    text = read_log_head(path)
    return record_from_header(read_log_header(text))


#: The header is in the first lines of a log; real headers (config dump included) are a few
#: hundred KB at most, so no more than this is read for it, whatever the file's size.
MAX_HEADER_BYTES = 8 << 20


def read_log_head(path: Path, limit: int = MAX_HEADER_BYTES) -> str:
    """The first ``limit`` bytes of a log as text: a regular file only (no FIFO or device).

    Raises:
        BadInputError: the file cannot be read or is not a regular file.
    """
    data = read_bounded(path, "training log", limit, head=True)
    return data.decode("utf-8", errors="replace")
