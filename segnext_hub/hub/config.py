"""The files of a model folder (cache entry, Hub repo, export) and the registry's part of
its config.

config.json itself is :class:`segnext_hub.config.ArtifactConfig`'s JSON form (one schema
for the cache, Hub repos and exported folders, so a folder from any of them loads the
same way); this module adds what only a registry entry knows: its test settings, source
URL and licence. No torch here.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import ArtifactConfig, read_config_file
from ..fileio import atomic_write_bytes
from .registry import Artifact

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
REPO_FILES = (MODEL_FILE, CONFIG_FILE, CARD_FILE)


def with_registry(config: ArtifactConfig, artifact: Artifact) -> ArtifactConfig:
    """``config`` as a registry artifact's: its name, dataset, test settings, source and licence."""
    return config.replace(
        name=artifact.name, dataset=artifact.dataset, test_mode=artifact.test_mode,
        resize_scale=artifact.resize_scale, test_crop_size=artifact.test_crop_size,
        test_stride=artifact.test_stride, source_layout=artifact.layout, source_url=artifact.url,
        license=artifact.license)


def write_config(folder: Path, config: ArtifactConfig, *, force: bool = True) -> Path:
    """``folder/config.json``, written atomically."""
    target = folder / CONFIG_FILE
    atomic_write_bytes(target, (json_text(config) + "\n").encode(), force=force)
    return target


def json_text(config: ArtifactConfig) -> str:
    return json.dumps(config.to_json(), indent=2)


def read_config(path: Path) -> ArtifactConfig:
    """A folder's config.json; a damaged or foreign file is one clear error naming it."""
    return read_config_file(path)
