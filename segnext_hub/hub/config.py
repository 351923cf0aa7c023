"""The config.json schema: what ``load`` needs to build a model, written by pull and export.

One schema for the cache, Hub repos and exported folders, so that a folder from any of
them loads the same way. Also reads the same facts back from a segnext-hub safetensors
header, which carries them as metadata. No torch here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

from .._version import __version__
from ..errors import BadInputError

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
REPO_FILES = (MODEL_FILE, CONFIG_FILE, CARD_FILE)


#: What config.json records about the run, each value next to where it was read.
RECORD_KEYS = ("training_seed", "training_seed_source", "classes", "palette")


def make_config(detection: Mapping[str, Any], *, name: str, artifact: Any = None,
                record: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """config.json for converted weights; ``detection`` is ``Detection.to_dict()``.

    With a registry ``artifact``, its test settings, source and licence are recorded too;
    a local file leaves them empty. ``record`` (``ConvertReport.record``) adds the
    training seed and its source, and the classes/palette the artifact recorded where they
    differ from the dataset's (so ``predict`` and ``eval`` show the model's own names).
    """
    config = {
        "architecture": "segnext",
        "name": name,
        "variant": detection["variant"],
        "kind": detection["kind"],
        "num_classes": detection["num_classes"],
        "md_r": detection["md_r"],
        "md_r_source": detection["sources"].get("md_r"),
        "ham_channels": detection.get("ham_channels"),
        "dataset": artifact.dataset if artifact is not None else detection["dataset"],
        "test_mode": None,
        "resize_scale": None,
        "test_crop_size": None,
        "test_stride": None,
        "source_layout": detection["layout"],
        "source_url": None,
        "license": None,
        "segnext_hub_version": __version__,
        "training_seed": None,
        "training_seed_source": None,
    }
    for key in RECORD_KEYS:
        if record and record.get(key) is not None:
            config[key] = record[key]
    if artifact is not None:
        config.update(
            test_mode=artifact.test_mode,
            resize_scale=list(artifact.resize_scale) if artifact.resize_scale else None,
            test_crop_size=list(artifact.test_crop_size) if artifact.test_crop_size else None,
            test_stride=list(artifact.test_stride) if artifact.test_stride else None,
            source_layout=artifact.layout,
            source_url=artifact.url,
            license=artifact.license,
        )
    return config


def config_from_metadata(meta: Mapping[str, str]) -> Optional[dict[str, Any]]:
    """The config a segnext-hub safetensors header records, or None for any other file."""
    if meta.get("architecture") != "segnext" or meta.get("layout", "mmseg") != "mmseg":
        return None
    config: dict[str, Any] = {"variant": meta["variant"], "kind": meta.get("kind", "segmentor")}
    if config["kind"] == "segmentor":
        config.update(num_classes=int(meta["num_classes"]), md_r=int(meta["md_r"]),
                      md_r_source=meta.get("md_r_source"), dataset=meta.get("dataset"))
        if str(meta.get("ham_channels", "")).isdigit():
            config["ham_channels"] = int(meta["ham_channels"])
        if str(meta.get("training_seed", "")).isdigit():
            config.update(training_seed=int(meta["training_seed"]),
                          training_seed_source=meta.get("training_seed_source"))
        for key in ("classes", "palette"):
            try:
                value = json.loads(meta[key]) if key in meta else None
            except ValueError:
                value = None
            if isinstance(value, list) and len(value) == config["num_classes"]:
                config[key] = value
    return config



def read_config(path: Path) -> dict[str, Any]:
    """A config.json as a dict; a damaged or foreign file is one clear error."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise BadInputError(f"cannot read {path}: {err.strerror or err}") from None
    except ValueError as err:
        raise BadInputError(f"{path} is not valid JSON ({err}); the folder is damaged") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{path} does not hold a JSON object; the folder is damaged")
    return data
