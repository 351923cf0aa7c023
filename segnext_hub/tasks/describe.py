"""What a local checkpoint or model folder is, read without writing anything.

``segnext-hub info PATH`` answers "what is this file?": the source layout its keys follow,
variant, kind, class count, MD_R and training seed with where each came from, the class
names, and which registry artifact it is. The file is read by the same safe readers
``segnext-convert`` uses and mapped in memory (no verification forward, no output file).

Which artifact a file is comes from its bytes, strongest evidence first: the registry's
pinned sha256; the sha256 a pull recorded for the file it downloaded (the cache
manifests); the 8-hex hash prefix at the end of an MMSeg file name (the first 8 hex digits
of the sha256 MMSeg's publisher computed). A file name alone is never taken as evidence.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from ..config import ArtifactConfig
from ..datasets import label_space
from ..errors import BadInputError
from ..fileio import read_json_file, sha256_file
from ..hub.cache import MANIFEST
from ..hub.config import CONFIG_FILE, MODEL_FILE, read_config
from ..hub.registry import list_artifacts

logger = logging.getLogger(__name__)

#: Keys every description has (``info --json`` promises them).
KEYS = ("layout", "variant", "kind", "num_classes", "md_r", "md_r_source", "training_seed",
        "training_seed_source")


def registry_match(sha256: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """The registry artifact a file with this sha256 is, and the evidence.

    Args:
        sha256: the file's full sha256 (lower-case hex).

    Returns:
        ``(name, how)``, or ``(None, None)`` when nothing the registry or the cache knows
        matches (a fine-tuned or re-saved file).
    """
    if not sha256:
        return None, None
    artifacts = list_artifacts()
    for art in artifacts:
        if art.sha256 == sha256:
            return art.name, "sha256 equals the registry's pinned sha256"
    for art in artifacts:
        manifest = _cached_manifest(art.name)
        if manifest is not None and manifest.raw_sha256 == sha256:
            return art.name, f"sha256 equals that of the file pulled as {art.name} (cache manifest)"
    for art in artifacts:
        if art.hash_prefix and sha256.startswith(art.hash_prefix):
            return art.name, f"sha256 starts with the hash prefix of {art.filename}"
    return None, None


def _cached_manifest(name: str) -> Any:  # a hub.manifest.Manifest, or None
    from ..hub.pull import cache_state  # the cache is optional evidence: a damaged entry is skipped

    try:
        return cache_state(name)[1]
    except BadInputError:
        return None


def describe_path(path: Path) -> dict[str, Any]:
    """Describe a checkpoint file (any format ``segnext-convert`` reads) or a model folder
    (``model.safetensors`` + ``config.json``: a cache entry, a ``push`` export, a Hub
    snapshot).

    Args:
        path: an existing file or folder.

    Returns:
        A JSON-ready dict with :data:`KEYS` plus ``path``, ``format``, ``sha256``,
        ``dataset``, ``classes`` (the names outputs are shown with), ``classes_source``,
        ``registry_artifact`` and ``registry_match`` (the evidence), and ``log_error`` /
        ``warnings`` where a cache entry recorded them.

    Raises:
        BadInputError: not a checkpoint, a foreign model, or an unreadable file (one line
            naming it).
    """
    if path.is_dir():
        return _describe_folder(path)
    return _describe_file(path)


def _describe_folder(folder: Path) -> dict[str, Any]:
    config_file, weights = folder / CONFIG_FILE, folder / MODEL_FILE
    if not config_file.is_file() or not weights.is_file():
        raise BadInputError(f"{folder} is not a model folder (no {MODEL_FILE} + {CONFIG_FILE}); "
                            "give a checkpoint file or a folder that holds both")
    config = read_config(config_file)
    manifest = read_json_file(folder / MANIFEST, "manifest") if (folder / MANIFEST).is_file() else None
    raw_sha = manifest.get("raw_sha256") if isinstance(manifest, dict) else None
    data = _from_config(config, layout="mmseg", file_format=f"folder ({MODEL_FILE} + {CONFIG_FILE})",
                        sha256=raw_sha or sha256_file(weights))
    data["sha256_of"] = "the pulled file (manifest.json)" if raw_sha else MODEL_FILE
    if isinstance(manifest, dict):
        data["log_error"] = manifest.get("log_error")
        data["warnings"] = manifest.get("warnings") or []
    if data["registry_artifact"] is None and config.name:
        data["registry_match"] = f"none by hash; {CONFIG_FILE} names it {config.name!r}"
    data["path"] = str(folder)
    return data


def _from_config(config: ArtifactConfig, *, layout: str, file_format: str, sha256: str) -> dict[str, Any]:
    """The description of an artifact config (folder, safetensors header or a file's
    detection): its typed fields, then what the file adds."""
    name, how = registry_match(sha256)
    fields = config.to_json()
    data: dict[str, Any] = {"path": None, "format": file_format, "sha256": sha256, "layout": layout}
    data.update((key, fields[key]) for key in KEYS if key != "layout")
    data.update(source_layout=config.source_layout, dataset=config.dataset, registry_artifact=name,
                registry_match=how, random_weights=_is_demo(config))
    data.update(_classes(config.num_classes, config.dataset, config.classes, config.classes_source))
    return data


def _is_demo(config: ArtifactConfig) -> bool:
    """Random weights say so where segnext-hub made them (``pretrained_backbone`` "none"
    is a fine-tune from random init, which is trained by then: not this)."""
    return "random weights" in (config.source_url or "")


def _classes(num_classes: Optional[int], dataset: Optional[str], classes: Any, source: Optional[str]) -> dict:
    if not num_classes:
        return {"classes": None, "classes_source": None}
    space = label_space(num_classes, dataset, classes)
    return {"classes": list(space.classes), "classes_source": source if classes else space.source}


def _describe_file(path: Path) -> dict[str, Any]:
    # torch is needed from here on (tensors), not before: a folder's config is plain JSON.
    from ..conversion.converter import convert_checkpoint
    from ..conversion.reading import read_checkpoint

    checkpoint = read_checkpoint(path)
    meta = checkpoint.metadata or {}
    if checkpoint.format == "safetensors" and meta.get("layout", "mmseg") == "mmseg":
        config = ArtifactConfig.from_metadata(meta, f"{path} metadata")
        if config is not None:  # segnext-hub's own safetensors: its header says everything
            data = _from_config(config, layout="mmseg", file_format="safetensors (segnext-hub metadata)",
                                sha256=checkpoint.sha256)
            data.update(path=str(path), sha256_of="the file")
            return data
    conversion = convert_checkpoint(checkpoint, verify=False)  # detection and record; nothing written
    det = conversion.detection
    data = _from_config(conversion.artifact_config(path.stem), layout=det.layout, file_format=checkpoint.format,
                        sha256=checkpoint.sha256)
    data.update(path=str(path), sha256_of="the file", layout_source=det.sources.get("layout"),
                disagreements=list(conversion.report.disagreements))
    return data


def format_description(data: dict[str, Any]) -> list[str]:
    """The lines ``segnext-hub info PATH`` prints (values that are unknown say so)."""
    def line(key: str, value: Any) -> str:
        return f"{key:<15} {value}"

    lines = [line("path", data["path"]), line("format", data["format"]),
             line("layout", data["layout"] + (f" ({data['layout_source']})" if data.get("layout_source") else "")),
             line("variant", data["variant"]), line("kind", data["kind"])]
    if data["kind"] == "segmentor":
        lines.append(line("num_classes", f"{data['num_classes']}"
                          + (f" ({data['dataset']})" if data.get("dataset") else "")))
        lines.append(line("MD_R", f"{data['md_r']} ({data['md_r_source'] or 'source not recorded'})"))
    seed = data["training_seed"]
    lines.append(line("training seed", f"{seed} ({data['training_seed_source']})" if seed is not None
                      else "not recorded"))
    if data.get("classes"):
        names = data["classes"]
        shown = ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
        lines.append(line("classes", f"{shown} [{data['classes_source']}]"))
    lines.append(line("sha256", f"{data['sha256']} (of {data.get('sha256_of', 'the file')})"))
    artifact = data["registry_artifact"]
    lines.append(line("registry", f"{artifact} ({data['registry_match']})" if artifact
                      else data.get("registry_match") or "no registry artifact has this sha256"))
    if data.get("random_weights"):
        lines.append(line("weights", "RANDOM (a demo/test model, not trained)"))
    if data.get("log_error"):
        lines.append(line("log", f"download failed: {data['log_error']}"))
    return lines
