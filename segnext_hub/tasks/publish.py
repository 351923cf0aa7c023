"""Publishing on the Hugging Face Hub: a Hub-ready folder (weights, config, model card) and push.

Everything published is verified first: registry names come from the cache (hash
re-checked), local checkpoints are converted with verification on, folders are checked by
building the model. The folder is built beside its destination and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from .._version import __version__
from ..conversion.converter import convert_checkpoint, write_output
from ..conversion.reading import read_checkpoint
from ..errors import BadInputError, OfflineError
from ..fileio import make_temp_dir
from ..config import ArtifactConfig
from ..hub.config import (
    CARD_FILE,
    CONFIG_FILE,
    MODEL_FILE,
    REPO_FILES,
    read_config,
    write_config,
)
from ..hub.hf import _hub_errors, _offline_reason, check_repo_id, hub_endpoint
from ..hub.pull import pull
from ..hub.registry import get_artifact
from ..loading import load_folder, resolve

PLACEHOLDER_REPO = "ORG/NAME"
# Written into every exported folder (never uploaded: push sends REPO_FILES only). ``--force``
# replaces a folder only when it carries this, naming every file in it.
EXPORT_MANIFEST = "segnext-export.json"
_DATASET_TITLES = {"ade20k": "ADE20K", "cityscapes": "Cityscapes", "isaid": "iSAID", "imagenet": "ImageNet-1k"}
_CHUNK = 1 << 20

PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------- export


@dataclass
class _Staged:
    """What a source left in the staging folder, and what the model card should say."""

    config: ArtifactConfig
    artifact: Any = None  # registry.Artifact, for registry names
    manifest: dict[str, Any] = field(default_factory=dict)  # cache manifest (registry names)
    conversion: dict[str, Any] = field(default_factory=dict)  # ConvertReport.to_dict() (local files)
    model_sha256: str = ""
    card_given: bool = False  # a reviewed README.md came with the source folder


def _copy_hashing(src: Path, dst: Path) -> str:
    digest = hashlib.sha256()
    with open(src, "rb") as reader, open(dst, "wb") as writer:
        for chunk in iter(lambda: reader.read(_CHUNK), b""):
            digest.update(chunk)
            writer.write(chunk)
    return digest.hexdigest()


def _stage_registry(name: str, staging: Path) -> _Staged:
    """Pull into the cache (no network when cached), then copy, re-checking the hash so a
    corrupted cache file is never published."""
    result = pull(name)
    model_sha = _copy_hashing(result.entry.weights, staging / MODEL_FILE)
    recorded = result.manifest.model_sha256
    if recorded and model_sha != recorded:
        raise BadInputError(f"{result.name}: cached {MODEL_FILE} does not match its recorded sha256; "
                            f"run: segnext-hub pull --force {result.name}")
    shutil.copyfile(result.entry.config_path, staging / CONFIG_FILE)
    config = read_config(staging / CONFIG_FILE)
    # make demo's loopback cache holds random weights under a registry name: no published claims.
    artifact = None if result.manifest.random_weights else get_artifact(result.name)
    return _Staged(config, artifact, result.manifest.to_json(), dict(result.manifest.conversion), model_sha)


def _stage_file(path: Path, staging: Path) -> _Staged:
    """Convert with verification on: nothing unverified is ever published."""
    conversion = convert_checkpoint(read_checkpoint(path), verify=True)  # reads the file's own record
    model_sha = write_output(conversion, staging / MODEL_FILE)
    config = conversion.artifact_config(path.stem)
    write_config(staging, config)
    return _Staged(config, conversion=conversion.report.to_dict(), model_sha256=model_sha)


def _stage_folder(folder: Path, staging: Path) -> _Staged:
    """An exported (maybe hand-edited) or cache folder: checked by building the model, and
    its README.md kept, so that ``push DIR`` publishes what was reviewed."""
    load_folder(folder)  # raises BadInputError when the weights do not fit the config
    model_sha = _copy_hashing(folder / MODEL_FILE, staging / MODEL_FILE)
    shutil.copyfile(folder / CONFIG_FILE, staging / CONFIG_FILE)
    config = read_config(staging / CONFIG_FILE)
    manifest = _read_json(folder / "manifest.json")
    staged = _Staged(config, _registry_match(config), manifest, manifest.get("conversion") or {}, model_sha)
    if (folder / CARD_FILE).is_file():
        shutil.copyfile(folder / CARD_FILE, staging / CARD_FILE)
        staged.card_given = True
    return staged


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _registry_match(config: ArtifactConfig) -> Any:
    """The registry entry a folder came from, when its config names it and its URL agrees."""
    try:
        art = get_artifact(str(config.name or ""))
    except BadInputError:
        return None
    return art if art.url == config.source_url else None


def _stage(name_or_path: Union[str, PathLike], staging: Path) -> _Staged:
    source = resolve(name_or_path)
    if source.kind == "registry":
        return _stage_registry(source.name, staging)
    if source.kind == "hf":
        raise BadInputError(f"{source.name}: push or export a local file, folder or registry name, not an hf:// repo")
    path = source.path
    if path.is_dir():
        if not (path / MODEL_FILE).is_file() or not (path / CONFIG_FILE).is_file():
            raise BadInputError(f"{path}: a folder to export needs {MODEL_FILE} + {CONFIG_FILE}")
        return _stage_folder(path, staging)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file")
    return _stage_file(path, staging)


def _check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out} exists and is not a folder")
    if out.exists() and not force:
        raise BadInputError(f"{out} already exists (use --force to replace it)")
    if out.exists():
        _check_earlier_export(out)
    if not out.parent.is_dir():
        raise BadInputError(f"output directory {out.parent} does not exist")


def _check_earlier_export(out: Path) -> None:
    """``--force`` deletes the old folder, so it must be one an export wrote (its
    :data:`EXPORT_MANIFEST` lists every file in it) or empty: never a folder of someone's
    own files given by mistake."""
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    marker = out / EXPORT_MANIFEST
    data = {} if marker.is_symlink() else _read_json(marker)
    if data.get("segnext_hub_export") != 1 or not isinstance(data.get("files"), list):
        raise BadInputError(f"{out} was not written by an export (no {EXPORT_MANIFEST}); --force replaces only "
                            "an earlier export: choose another folder or remove it yourself")
    stray = [name for name in entries if name not in {*map(str, data["files"]), EXPORT_MANIFEST}]
    if stray:
        raise BadInputError(f"{out} holds {stray[0]!r}, which the earlier export did not write; --force replaces "
                            "only an export's own files: move it away first")


def _write_export_manifest(folder: Path) -> None:
    files = sorted(p.name for p in folder.iterdir())
    data = {"segnext_hub_export": 1, "files": files, "segnext_hub_version": __version__}
    (folder / EXPORT_MANIFEST).write_text(json.dumps(data, indent=1), encoding="utf-8")


def _replace_dir(staging: Path, out: Path) -> None:
    """Swap the finished staging folder into place; an old ``out`` goes only once the new
    one is there, and comes back if the swap fails."""
    trash = None
    if out.exists():
        trash = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, trash)
    try:
        os.replace(staging, out)
    except OSError:
        if trash is not None:
            os.replace(trash, out)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def export_folder(name_or_path: Union[str, PathLike], out_dir: PathLike, *, force: bool = False,
                  repo_id: Optional[str] = None) -> Path:
    """Write a Hub-ready folder: ``model.safetensors``, ``config.json``, ``README.md``.

    ``name_or_path``: a registry name (pulled into the cache if needed), a local checkpoint
    in any supported layout (converted, with verification), or a folder holding
    ``model.safetensors`` + ``config.json`` (e.g. an earlier export, whose README.md is
    kept). ``repo_id`` only fills the model card's usage line. The folder is built beside
    ``out_dir`` and renamed into place, so it is either complete or absent; an existing
    ``out_dir`` is replaced only with ``force``, and only when it is empty or an earlier
    export (its ``segnext-export.json`` names every file in it).
    """
    out = Path(out_dir).expanduser()
    _check_out_dir(out, force)
    if repo_id is not None:
        check_repo_id(repo_id)
    staging = make_temp_dir(out.parent, f".{out.name}.")  # umask's mode: mkdtemp would make it 0700
    try:
        staged = _stage(name_or_path, staging)
        if not staged.card_given:
            card = model_card(staged.config, repo_id or PLACEHOLDER_REPO, artifact=staged.artifact,
                              manifest=staged.manifest, conversion=staged.conversion,
                              model_sha256=staged.model_sha256)
            (staging / CARD_FILE).write_text(card, encoding="utf-8")
        _write_export_manifest(staging)
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


# --------------------------------------------------------------------------- model card


def _hub_license(text: Optional[str]) -> dict[str, str]:
    """The card's licence fields. Only a plain Apache-2.0 statement maps to ``apache-2.0``;
    the official release adds a commercial-use note, which ``other`` keeps visible."""
    if not text:
        return {}
    if "commercial" in text.lower():
        return {"license": "other", "license_name": "segnext-official",
                "license_link": "https://github.com/Visual-Attention-Network/SegNeXt"}
    if "apache-2.0" in text.lower() or "apache license 2.0" in text.lower():
        return {"license": "apache-2.0"}
    return {"license": "other", "license_name": "see-model-card", "license_link": "LICENSE"}


def _card_data(config: ArtifactConfig, licence: Optional[str]) -> Any:
    """The front matter as huggingface_hub's ``ModelCardData``: the Hub's own field names and
    YAML rendering (fields left unset are omitted)."""
    from huggingface_hub import ModelCardData

    tags = ["semantic-segmentation", "segnext", "mscan", f"segnext-{config.variant}"]
    if config.dataset:
        tags.append(str(config.dataset))
    if config.kind == "backbone":
        tags.append("backbone")
    return ModelCardData(library_name="segnext-hub", pipeline_tag="image-segmentation", tags=tags,
                         **_hub_license(licence))


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return f"{value:.{digits}f}" if value is not None else "not reported"


def _metrics_section(artifact: Any, random_weights: Optional[str] = None) -> list[str]:
    if random_weights:
        return ["## Results", "", f"None: these weights are RANDOM ({random_weights}). Do not use them "
                "for anything but testing the pipeline.", ""]
    if artifact is None:
        return ["## Results", "",
                "No published results are attached to this file: it did not come from the segnext-hub "
                "registry. segnext-hub has not evaluated it.", ""]
    metrics = artifact.metrics
    if metrics.miou is None and metrics.miou_ms is None and metrics.fps is None:
        return ["## Results", "",
                "The publisher reports no segmentation results for this file (an ImageNet backbone "
                "is meant to be fine-tuned).", ""]
    return [
        "## Reported results", "",
        "| metric | value |", "|---|---|",
        f"| mIoU, single scale (%) | {_fmt(metrics.miou)} |",
        f"| mIoU, multi-scale (+flip where stated) (%) | {_fmt(metrics.miou_ms)} |",
        f"| inference speed (FPS) | {_fmt(metrics.fps)} |", "",
        f"Source: {metrics.source}", "",
        "These are the publisher's numbers for the original checkpoint; segnext-hub converts the "
        "weights without changing what they compute (verified, see Provenance) but has not "
        "re-evaluated them.", "",
    ]


def _md_r_section(config: ArtifactConfig, artifact: Any, repo: str) -> list[str]:
    if config.kind == "backbone":
        return []
    source = str(config.md_r_source or "not recorded").rstrip(". ")
    other = 16 if config.md_r == 64 else 64
    lines = ["## The NMF rank (MD_R)", "",
             f"`md_r = {config.md_r}`, from: {source}.", "",
             "No weight depends on it, but outputs do. To run with another rank: "
             f"`segnext_hub.load(\"hf://{repo}\", md_r={other})`."]
    # Only a value the registry chose is in doubt; one the checkpoint or its log records is settled.
    if artifact is not None and artifact.md_r_settled is False and source.startswith("registry"):
        lines += ["", "**The sources disagree on this value** (see the source note above); the "
                      "registry's choice is the one the published configs resolve to."]
    return lines + [""]


def _seed_section(config: ArtifactConfig) -> list[str]:
    if config.kind == "backbone":
        return []
    return ["## Reproducibility: the NMF seed", "",
            "The LightHamHead factorises features with NMF starting from random bases drawn at "
            "every forward pass, in eval mode too, so outputs depend on the random state. Call "
            "`torch.manual_seed(s)` right before inference (the bases are drawn exactly as "
            "MMSegmentation draws them, so this reproduces MMSeg bit for bit), or pass "
            "`generator=torch.Generator().manual_seed(s)`. MMSegmentation notes that the mIoU of "
            "SegNeXt varies with this seed and advises reusing the training seed from the log.", ""]


def _usage_section(config: ArtifactConfig, repo: str) -> list[str]:
    lines = ["## Usage", "", "```sh", "pip install segnext-hub", "```", "", "```python",
             "import torch, segnext_hub", "",
             f'model = segnext_hub.load("hf://{repo}")   # eval mode; device=, dtype=, md_r= as needed']
    if config.kind == "backbone":
        lines += ["features = model(torch.randn(1, 3, 224, 224))   # four maps at strides 4, 8, 16, 32"]
    else:
        args = []
        if config.test_mode == "slide":
            args += ['mode="slide"', f"crop_size={tuple(config.test_crop_size)}",
                     f"stride={tuple(config.test_stride)}"]
        if config.resize_scale:
            args.insert(0, f"scale={tuple(config.resize_scale)}")
        extra = (", " + ", ".join(args)) if args else ""
        lines += ["torch.manual_seed(0)                      # see 'Reproducibility' below",
                  f"(pred,) = model.predict(rgb{extra})   # rgb: (H, W, 3) uint8; pred.mask: (H, W) class ids"]
    return lines + ["```", "",
                    f"`hf://{repo}@REVISION` pins a branch, tag or commit. Offline "
                    "(`HF_HUB_OFFLINE=1` or `SEGNEXT_HUB_OFFLINE=1`), the local Hugging Face cache is used.", ""]


def _verification_text(conversion: dict[str, Any]) -> str:
    ver = conversion.get("verification") if conversion else None
    if not ver:
        return "not recorded"
    state = "passed" if ver.get("verified") else "FAILED"
    return (f"{state}: source and converted models compared on {len(ver.get('inputs', []))} inputs, "
            f"max abs difference {ver.get('max_abs_diff')} (tolerance {ver.get('atol')})")


def _provenance_section(config: ArtifactConfig, artifact: Any, manifest: dict[str, Any],
                        conversion: dict[str, Any], model_sha256: str) -> list[str]:
    lines = ["## Provenance", ""]
    if artifact is not None:
        lines += [f"- {artifact.provenance}",
                  f"- Original file: `{artifact.filename}` from {artifact.url}"
                  + ("" if artifact.url_verified else " (link built by segnext-hub, not verified upstream)")]
        if manifest.get("raw_sha256"):
            lines.append(f"- Original file sha256 (measured): `{manifest['raw_sha256']}`; "
                         f"hash check: {manifest.get('hash_status', 'not recorded')}")
        if artifact.log_url:
            lines.append(f"- Training log: {artifact.log_url}")
        lines.append(f"- Test settings: {artifact.test_source}")
    elif conversion:
        lines.append(f"- Converted from a local file `{Path(str(conversion.get('source', '?'))).name}` "
                     f"(sha256 `{conversion.get('source_sha256', '?')}`), not from the segnext-hub registry.")
    else:
        lines.append("- Source: not recorded.")
    det = (conversion or {}).get("detection") or {}
    layout = config.source_layout or det.get("layout") or "unknown"
    version = config.segnext_hub_version
    how = ("already MMSegmentation 1.x names, re-saved" if layout == "mmseg"
           else "renamed to MMSegmentation 1.x names")
    lines += [f"- Key layout of the source: `{layout}`; {how} by segnext-hub {version}",
              f"- Verification of the conversion: {_verification_text(conversion)}",
              f"- `{MODEL_FILE}` sha256: `{model_sha256 or 'not recorded'}`",
              f"- Model: SegNeXt-{str(config.variant).upper()}, {config.kind}"
              + (f", {config.num_classes} classes ({config.dataset or 'unknown dataset'})"
                 if config.kind == "segmentor" else ""), ""]
    return lines


def _license_section(licence: Optional[str]) -> list[str]:
    text = licence or ("Not recorded: this file did not come from the segnext-hub registry. Whoever "
                       "publishes it must state its licence here and in the front matter.")
    return ["## Licence", "", text, ""]


def model_card(config: ArtifactConfig, repo_id: str, *, artifact: Any = None,
               manifest: Optional[dict[str, Any]] = None, conversion: Optional[dict[str, Any]] = None,
               model_sha256: str = "") -> str:
    """The README.md: front matter the Hub indexes, then what a user needs to trust the
    weights (numbers with their source, provenance, MD_R, seed) and to use them."""
    licence = artifact.license if artifact is not None else config.license
    dataset = _DATASET_TITLES.get(str(config.dataset), config.dataset or "unknown data")
    what = "ImageNet-pretrained MSCAN backbone" if config.kind == "backbone" else f"{dataset} model"
    title = f"# SegNeXt-{str(config.variant).upper()} {what}"
    if artifact is not None:
        title += f" (`{artifact.name}`)"
    intro = ["", "SegNeXt weights with MMSegmentation 1.x parameter names, for "
                 "[segnext-hub](https://pypi.org/project/segnext-hub/) (plain PyTorch; no mmcv/mmseg needed).", ""]
    random_weights = (manifest or {}).get("random_weights")
    if random_weights:
        title += " (RANDOM WEIGHTS)"
    body = ([title] + intro + _usage_section(config, repo_id) + _metrics_section(artifact, random_weights)
            + _md_r_section(config, artifact, repo_id) + _seed_section(config)
            + _provenance_section(config, artifact, manifest or {}, conversion or {}, model_sha256)
            + _license_section(licence)
            + ["## Files", "",
               f"- `{MODEL_FILE}`: the weights; its header metadata records variant, kind, classes, "
               "MD_R, source hash and verification.",
               f"- `{CONFIG_FILE}`: what `segnext_hub.load` needs to build the model (same schema as "
               "the segnext-hub cache).", ""])
    from huggingface_hub import ModelCard

    front = _card_data(config, licence).to_yaml()
    return str(ModelCard(f"---\n{front}\n---\n\n" + "\n".join(body)))  # parsing it back checks the YAML


# --------------------------------------------------------------------------- push / download


def push(name_or_path: Union[str, PathLike], repo_id: str, *, private: bool = False,
         token: Optional[str] = None, endpoint: Optional[str] = None,
         commit_message: Optional[str] = None) -> str:
    """Export ``name_or_path`` (see :func:`export_folder`) and upload it; returns the repo URL.

    The repo is created when missing (``private`` applies only then). Auth and network
    failures raise one-line BadInputError / DownloadError; offline mode raises OfflineError
    before anything is converted.
    """
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    url = hub_endpoint(endpoint)
    if (reason := _offline_reason()) is not None:
        raise OfflineError(f"push needs the network, but {reason} is set")
    with tempfile.TemporaryDirectory(prefix="segnext-hub-push-") as tmp:
        folder = export_folder(name_or_path, Path(tmp) / "export", repo_id=repo_id)
        api = HfApi(endpoint=url, token=token)
        with _hub_errors(f"push to {repo_id}", url):
            repo_url = api.create_repo(repo_id, private=True if private else None, exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=str(folder), allow_patterns=list(REPO_FILES),
                              commit_message=commit_message or f"Upload {Path(str(name_or_path)).name} "
                                                               f"with segnext-hub {__version__}")
    return str(repo_url)
