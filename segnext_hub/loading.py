"""``load``: one call from a name, a file or a Hub repo to an eval-mode model; and
``create_model``: a new model, its backbone optionally from an ImageNet artifact.

``resolve`` is the one rule that tells a registry name from a path from an ``hf://`` repo;
every command and function that takes "a name or a path" goes through it.

A warm load copies no weight and builds no module: the safetensors file is memory-mapped
(copy-on-write) and each tensor is a view of the mapping; the module tree is built once
per (variant, classes, MD_R, kind) on the meta device, and each load stamps out a
structural clone of it holding the mapped tensors. No random initialiser, no
``load_state_dict`` walk, no deepcopy; two loads share no tensor and no mutable state.
"""

from __future__ import annotations

import collections
import copy
import functools
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from .config import ArtifactConfig
from .conversion.converter import convert_checkpoint
from .conversion.reading import read_checkpoint
from .conversion.verify import check_keys
from .errors import BadInputError, RemovedWhileLoading
from .hub.cache import use_lock
from .hub.config import CONFIG_FILE, MODEL_FILE, read_config
from .hub.hf import download_repo
from .hub.entry import CacheEntry
from .hub.pull import pull
from .hub.names import Source, resolve  # noqa: F401 - part of this module's API
from .models import Variant, get_variant
from .models.variants import check_md_r, check_positive_int
from .models.factory import build_model
from .models.fused import fuse

logger = logging.getLogger(__name__)


# How a clone gets each attribute of a skeleton module: immutable values are shared (no
# load can change another's); containers of them are copied per clone (the hook dicts,
# the non-persistent buffer set); anything else is deep-copied (SegNeXt has none).
_ATOMS = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)
_SHALLOW_CONTAINERS = (dict, collections.OrderedDict, list, set)


def _is_atom(value: Any) -> bool:
    if type(value) in (tuple, frozenset):
        return all(_is_atom(v) for v in value)
    return isinstance(value, _ATOMS)


def _needs_copy(value: Any) -> bool:
    """A container of atoms: a shallow copy makes it independent."""
    if type(value) not in _SHALLOW_CONTAINERS:
        return False
    return all(_is_atom(x) for x in (value.items() if isinstance(value, dict) else value))


@dataclass(frozen=True)
class _ModulePlan:
    """How to make one module of a clone: its class, attributes and where its tensors come from."""

    cls: type
    attrs: dict[str, Any]  # every attribute but _parameters/_buffers/_modules; training=False
    copied: tuple[str, ...]  # containers of immutable values: shallow-copied per clone
    deep: tuple[str, ...]  # anything else: deep-copied per clone, with the clone's memo
    params: tuple[tuple[str, Optional[str]], ...]  # attribute -> state key (None: a None parameter)
    buffers: tuple[tuple[str, Optional[str]], ...]
    children: tuple[tuple[str, Optional[int]], ...]  # attribute -> index into plans (None: no module)


@dataclass(frozen=True)
class _Skeleton:
    """A meta-device model tree and the plan that stamps out real instances of it.

    ``expected`` (state key -> meta tensor) is what :func:`check_keys` compares a state
    dict with; ``param_keys`` names each distinct parameter once (tied parameters share a
    key) with its ``requires_grad``.
    """

    template: nn.Module
    plans: tuple[_ModulePlan, ...]
    expected: dict[str, torch.Tensor]
    param_keys: tuple[tuple[str, bool], ...]
    sets_eval_mode: bool  # False if some module overrides train(): then .eval() is called


@functools.lru_cache(maxsize=16)
def _meta_skeleton(variant: str, num_classes: int, md_r: Optional[int], backbone_only: bool,
                   ham_channels: Optional[int] = None) -> _Skeleton:
    """Building the module tree costs more than reading the weights (the Python overhead
    of ~900 ``__init__`` calls, ~0.3 s for L); it is built once per (variant, classes,
    MD_R, kind, head width) on the meta device, and every load stamps out a copy of it."""
    with torch.device("meta"):
        template = build_model(variant, num_classes=num_classes, md_r=md_r, backbone_only=backbone_only,
                               ham_channels=ham_channels)
    return _plan(template)


def _plan(template: nn.Module) -> _Skeleton:
    modules = list(template.modules())  # parents first; each module once
    index = {id(module): i for i, module in enumerate(modules)}
    expected = template.state_dict(keep_vars=True)
    key_of: dict[int, str] = {}  # tensor id -> its first state key (tied tensors share one)
    for key, tensor in expected.items():
        key_of.setdefault(id(tensor), key)
    plans = []
    for module in modules:
        attrs = {k: v for k, v in vars(module).items() if k not in ("_parameters", "_buffers", "_modules")}
        attrs["training"] = False
        copied = tuple(k for k, v in attrs.items() if _needs_copy(v))
        deep = tuple(k for k, v in attrs.items() if not _is_atom(v) and k not in copied)
        params = tuple((name, None if p is None else key_of[id(p)]) for name, p in module._parameters.items())
        buffers = tuple((name, None if b is None else key_of.get(id(b))) for name, b in module._buffers.items())
        if any(b is not None and key is None for (_, key), b in zip(buffers, module._buffers.values())) or any(
                isinstance(v, torch.Tensor) for v in attrs.values()):
            raise RuntimeError(f"{type(module).__name__} holds a tensor outside the state dict (a non-persistent "
                               "buffer or a plain attribute); the loader could not fill it")  # SegNeXt has none
        children = tuple((name, None if child is None else index[id(child)])
                         for name, child in module._modules.items())
        plans.append(_ModulePlan(type(module), attrs, copied, deep, params, buffers, children))
    param_keys = {key_of[id(p)]: p.requires_grad for p in template.parameters()}
    sets_eval_mode = all(type(m).train is nn.Module.train for m in modules)
    return _Skeleton(template, tuple(plans), expected, tuple(param_keys.items()), sets_eval_mode)


def _copy_with_weights(skeleton: _Skeleton, state: dict[str, torch.Tensor]) -> nn.Module:
    """A new instance of the skeleton's tree holding ``state``'s tensors, in eval mode.

    A structural clone: each module is made with ``object.__new__`` and its own copy of
    the skeleton's attribute dict (immutable values shared, containers copied), then its
    parameters (new ``nn.Parameter`` objects around the loaded tensors, no data copied),
    buffers and children are filled in. No ``__init__``, no ``load_state_dict`` walk, no
    deepcopy; about 10x cheaper than ``copy.deepcopy`` of the tree. Two clones share no
    tensor and no mutable container. The caller has checked keys and shapes.
    """
    params = {key: nn.Parameter(state[key], requires_grad=grad) for key, grad in skeleton.param_keys}
    instances = [object.__new__(plan.cls) for plan in skeleton.plans]
    memo: Optional[dict[int, Any]] = None
    for instance, plan in zip(instances, skeleton.plans):
        attrs = dict(plan.attrs)
        for name in plan.copied:
            attrs[name] = attrs[name].copy()
        if plan.deep:  # never for SegNeXt; kept so that a new module type stays correct
            if memo is None:
                memo = _clone_memo(skeleton, instances, params, state)
            for name in plan.deep:
                attrs[name] = copy.deepcopy(attrs[name], memo)
        attrs["_parameters"] = {name: None if key is None else params[key] for name, key in plan.params}
        attrs["_buffers"] = {name: None if key is None else state[key] for name, key in plan.buffers}
        attrs["_modules"] = {name: None if i is None else instances[i] for name, i in plan.children}
        object.__setattr__(instance, "__dict__", attrs)
    model = instances[0]
    return model if skeleton.sets_eval_mode else model.eval()


def _clone_memo(skeleton: _Skeleton, instances: list[nn.Module], params: dict[str, nn.Parameter],
                state: dict[str, torch.Tensor]) -> dict[int, Any]:
    """deepcopy memo mapping the skeleton's modules and tensors to this clone's."""
    memo: dict[int, Any] = {id(m): new for m, new in zip(skeleton.template.modules(), instances)}
    for key, meta in skeleton.expected.items():
        memo[id(meta)] = params.get(key, state[key])
    return memo


def _place(state: dict[str, torch.Tensor], device: Union[str, torch.device],
           dtype: Optional[torch.dtype]) -> dict[str, torch.Tensor]:
    """Tensors on ``device``, floating ones in ``dtype`` (as ``Module.to`` would cast them).

    Done on the state before cloning so that the default (CPU, stored dtype) keeps the
    memory-mapped tensors as they are: nothing copied, nothing walked.
    """
    target = torch.device(device)
    out = {}
    for key, tensor in state.items():
        cast = dtype if dtype is not None and tensor.is_floating_point() else None
        if tensor.device != target or (cast is not None and tensor.dtype != cast):
            tensor = tensor.to(device=target, dtype=cast)
        out[key] = tensor
    return out


def build_from_config(config: ArtifactConfig, state: dict[str, torch.Tensor], *,
                      md_r: Optional[int] = None, device: Union[str, torch.device] = "cpu",
                      dtype: Optional[torch.dtype] = None) -> nn.Module:
    """An eval-mode model from its config and MMSeg-named tensors; ``md_r`` overrides the config's."""
    backbone_only = config.is_backbone
    rank = md_r if md_r is not None else config.md_r
    width = None if backbone_only else config.ham_channels  # None: the variant's (older configs)
    if md_r is not None and not backbone_only:
        try:
            check_md_r(md_r, width or get_variant(config.variant).ham_channels)
        except ValueError as err:
            raise BadInputError(f"md_r argument: {err}") from None
    skeleton = _meta_skeleton(config.variant, config.num_classes or 150, rank, backbone_only, width)
    check_keys(state, skeleton.expected)
    model = _copy_with_weights(skeleton, _place(state, device, dtype))
    if md_r is not None and not backbone_only:
        config = config.replace(md_r=md_r, md_r_source=f"user override (md_r={md_r})")
    model.segnext_config = config
    return model


# safetensors dtype names this reader maps; files with any other go through load_file.
_MAPPED_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                  "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                  "U8": torch.uint8}


def map_safetensors(path: Union[str, Path]) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file as views of one private memory map of it.

    What ``safetensors.torch.load_file`` returns too (it maps the file, copy-on-write: no
    weight is copied, writing to a tensor never reaches the file or another load), but
    load_file makes each tensor through two Python-level storage slices, ~45 ms for L's
    1500 tensors on the benchmark machine, against ~4 ms for one ``as_strided`` view each
    here. The library still validates the header first (``safe_open``: offsets contiguous
    and inside the file, byte counts matching shapes); a file this reader does not map
    (another dtype, bool, an unaligned offset, a big-endian host) goes through load_file.
    """
    where = str(path)
    try:
        with safe_open(where, "pt"):
            pass  # validation only
        with open(where, "rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_len))
    except Exception as err:  # noqa: BLE001 - any parse failure is bad input
        raise BadInputError(f"cannot read {path}: {err}".splitlines()[0]) from None
    header.pop("__metadata__", None)
    data_start = 8 + header_len
    entries = []
    for name, info in header.items():
        dtype = _MAPPED_DTYPES.get(info["dtype"])
        begin = data_start + info["data_offsets"][0]
        if dtype is None or begin % dtype.itemsize or sys.byteorder != "little":
            return load_file(where)
        entries.append((name, dtype, info["shape"], begin // dtype.itemsize))
    size = data_start + max((info["data_offsets"][1] for info in header.values()), default=0)
    storage = torch.UntypedStorage.from_file(where, shared=False, nbytes=size)  # MAP_PRIVATE
    whole: dict[torch.dtype, torch.Tensor] = {}  # the mapping seen as each dtype
    tensors = {}
    for name, dtype, shape, offset in entries:
        if dtype not in whole:
            whole[dtype] = torch.empty(0, dtype=dtype).set_(storage)
        strides, step = [], 1
        for dim in reversed(shape):
            strides.append(step)
            step *= dim
        tensors[name] = whole[dtype].as_strided(shape, strides[::-1], offset)
    return tensors


def load_folder(folder: Path, **kwargs: Any) -> nn.Module:
    """A cache or Hub folder with model.safetensors + config.json."""
    config, state = read_folder(folder)
    return build_from_config(config, state, **kwargs)


def read_folder(folder: Path) -> tuple[ArtifactConfig, dict[str, torch.Tensor]]:
    """(config, MMSeg-named tensors) of a folder; an unreadable file is one line naming it."""
    config_file, weights = folder / CONFIG_FILE, folder / MODEL_FILE
    if not config_file.is_file() or not weights.is_file():
        raise BadInputError(f"{folder} has no {MODEL_FILE} + {CONFIG_FILE}")
    config = read_config(config_file)  # values bounded, MD_R within the head (ArtifactConfig)
    return config, map_safetensors(weights)  # BadInputError naming the file when unreadable


def read_cached(name: str, *, progress: Optional[bool] = None) -> tuple[ArtifactConfig, dict[str, torch.Tensor]]:
    """(config, tensors) of a registry artifact, pulled first if needed.

    Maps the weights under the artifact's shared use lock, so ``rm`` or a repairing pull
    waits until the mapping exists (a file removed or replaced after that stays readable
    through the mapping: both replace whole entries by rename, never a file in place); the
    sizes of config.json and model.safetensors are checked against the manifest first (a
    stat each), and every file is opened only as a regular file inside the entry. A
    damaged entry (an unreadable file, a value out of range) names the repair command.
    """
    entry = CacheEntry(name)
    for attempt in range(2):
        with use_lock(name):
            # Only what a load reads: a damaged training log must not stop inference.
            manifest = entry.complete_manifest(only=(CONFIG_FILE, MODEL_FILE))  # damage: one line + repair
            if manifest is not None:
                config = entry.read_config()  # a value out of range: damage naming the field
                try:
                    return config, map_safetensors(entry.weights)
                except BadInputError as err:
                    raise entry.damaged(str(err).replace(f"{entry.folder}/", "")) from None
        if attempt:
            break
        pull(name, progress=progress)
    raise RemovedWhileLoading(f"{name} was removed while loading; pull it again (segnext-hub pull {name})")


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The header metadata of a ``.safetensors`` file; an unreadable file is one line."""
    try:
        with safe_open(str(path), "pt") as handle:
            return handle.metadata() or {}
    except Exception as err:  # noqa: BLE001 - any parse failure is bad input
        raise BadInputError(f"cannot read {path}: {err}".splitlines()[0]) from None


def load_file_path(path: Path, **kwargs: Any) -> nn.Module:
    """A local checkpoint: our own safetensors load directly, anything else is converted."""
    if path.is_dir():
        return load_folder(path, **kwargs)
    if path.suffix == ".safetensors" and path.is_file():
        meta = safetensors_metadata(path)
        config = ArtifactConfig.from_metadata(meta, f"{path} metadata")
        if config is not None and meta.get("layout", "mmseg") == "mmseg":  # other layouts are converted
            return build_from_config(config, map_safetensors(path), **kwargs)
    conversion = convert_checkpoint(read_checkpoint(path), md_r=kwargs.get("md_r"))  # reads its own record
    return build_from_config(conversion.artifact_config(path.stem), conversion.tensors, **kwargs)


def load(name_or_path: Union[str, Path], *, device: Union[str, torch.device] = "cpu",
         dtype: Optional[torch.dtype] = None, md_r: Optional[int] = None, num_classes: Optional[int] = None,
         progress: Optional[bool] = None, fast: bool = False, mmap: bool = True) -> nn.Module:
    """An eval-mode SegNeXt (or MSCAN for backbone artifacts) ready for inference.

    One resolver for every source (see docs/cli.md, "Names and paths"), so a script works
    the same with a published name, a file on disk or a Hugging Face repo.

    Args:
        name_or_path: A registry name (pulled into the cache if needed; ``segnext-hub list``
            shows them), a local ``.safetensors``/``.pth``/``.pkl`` (converted, with
            verification, on the fly when in another layout), a cache folder, or
            ``hf://org/repo[@revision]``.
        device: Where the weights go (moved once, as ``Module.to`` would).
        dtype: Cast the floating-point weights once; None keeps float32.
        md_r: Overrides the NMF rank recorded with the weights (outputs depend on it; no
            weight does).
        num_classes: Starts a fine-tuning run: every weight from the artifact, and a new
            ``conv_seg`` (MMSeg's initialisation: normal, std 0.01, bias 0, from the global
            RNG) when it differs from the artifact's classes; call ``.train()`` on the result.
        progress: Show a download bar; None shows one on a terminal only.
        fast: Return the fused inference-only model (folded norms, fused kernels; equal up to
            rounding, see docs/fast.md).
        mmap: Map the cached file (the default: no weight is copied). False copies the
            weights into memory of their own: a mapped model follows a rewrite of its file
            in place, and truncating the file kills the process with SIGBUS
            (docs/reliability.md).

    Returns:
        The model in eval mode; ``model.segnext_config`` (an ``ArtifactConfig``) says what
        it is and where each decisive value (MD_R, training seed, classes) came from.

    Raises:
        BadInputError: Unknown name (with close matches), unreadable or foreign file, a
            backbone artifact given ``num_classes``, a bad ``num_classes``.
        OfflineError: Offline (``SEGNEXT_HUB_OFFLINE``) and the name is not cached.
        DownloadError: The download failed or its hash is wrong.
        DamagedEntryError: The cached copy no longer matches its manifest (``pull`` repairs it).
        VerificationError: A file converted on the fly does not compute what its source does.
    """
    model = _load_exact(name_or_path, device=device, dtype=dtype, md_r=md_r, progress=progress)
    if not mmap:
        for module in model.modules():  # own memory: nothing refers to the file any more
            for table in (module._parameters, module._buffers):
                for key, tensor in table.items():
                    if tensor is not None:
                        tensor.data = tensor.data.clone()
    if num_classes is not None:
        _use_classes(model, num_classes, name_or_path)
    if not fast:
        return model
    fused = fuse(model)
    fused.segnext_config = model.segnext_config
    return fused


def _check_num_classes(num_classes: Any) -> int:
    """The model's rule for a class count, as bad input (one line, exit 2)."""
    try:
        return check_positive_int("num_classes", num_classes)
    except ValueError as err:
        raise BadInputError(str(err)) from None


def _use_classes(model: nn.Module, num_classes: int, source: Union[str, Path]) -> None:
    """Give a loaded segmentor ``num_classes`` outputs (a new classifier if that differs)."""
    config = model.segnext_config
    if config.is_backbone:
        raise BadInputError(
            f"{source} is an ImageNet backbone, with no decode head to give {num_classes} classes; use "
            f"create_model({config.variant!r}, num_classes={num_classes}, pretrained_backbone={str(source)!r})")
    _check_num_classes(num_classes)
    if num_classes == model.num_classes:
        return
    model.replace_classifier(num_classes)
    # The artifact's label space no longer describes the outputs.
    model.segnext_config = config.replace(
        num_classes=num_classes, dataset=None, classes=None, classes_source=None, palette=None, palette_source=None,
        training_seed=None, training_seed_source=None,
        new_weights=tuple(f"decode_head.conv_seg.{key}" for key in model.decode_head.conv_seg.state_dict()))


def create_model(variant: Union[str, Variant], *, num_classes: int = 150, md_r: Optional[int] = None,
                 backbone_only: bool = False, pretrained_backbone: Union[str, Path, None] = None,
                 progress: Optional[bool] = None, ham_channels: Optional[int] = None) -> nn.Module:
    """A new SegNeXt (or MSCAN), initialised as MMSeg initialises one, in eval mode.

    The starting point of training from scratch or from an ImageNet backbone, as MMSeg's
    configs do; use :func:`load` for published weights.

    Args:
        variant: ``"t"``, ``"s"``, ``"b"``, ``"l"`` (or ``"mscan-t"``, ``"segnext-tiny"``...)
            or a ``Variant``.
        num_classes: Outputs of the classifier (``conv_seg``).
        md_r: The NMF rank; None is the variant's default (the official repo's: T/S 16, B/L
            64). MMSeg's 1.x configs train every size with 16.
        backbone_only: Return the MSCAN alone (state-dict keys without a prefix).
        pretrained_backbone: A registry name such as ``mscan-b-in1k``, a path in any layout
            ``segnext-convert`` reads, or ``hf://org/repo``: fills the MSCAN as MMSeg's
            ``init_cfg=Pretrained`` does, but strictly: the artifact must be of the same
            variant and every backbone tensor is used (a segmentor artifact gives its
            backbone).
        progress: Show a download bar for ``pretrained_backbone``; None: on a terminal only.
        ham_channels: The decode head's width; None is the variant's (PaddleSeg's configs
            use 256 for every size).

    Returns:
        The model in eval mode. The newly initialised tensors are listed in
        ``model.segnext_config.new_weights`` (and logged at INFO).

    Raises:
        ValueError: Unknown variant, or a ``num_classes``/``md_r`` that is not a positive integer.
        BadInputError: ``pretrained_backbone`` holds another variant, or cannot be read.
        OfflineError: ``pretrained_backbone`` is an uncached name while offline.
    """
    spec = variant if isinstance(variant, Variant) else get_variant(variant)
    try:
        model = build_model(spec, num_classes=_check_num_classes(num_classes), md_r=md_r,
                            backbone_only=backbone_only, ham_channels=ham_channels)
    except ValueError as err:  # md_r or ham_channels out of range: bad input, one line
        raise BadInputError(str(err)) from None
    config = ArtifactConfig(
        variant=spec.name, kind="backbone" if backbone_only else "segmentor",
        num_classes=None if backbone_only else num_classes,
        md_r=None if backbone_only else model.decode_head.md_r,
        ham_channels=None if backbone_only else model.decode_head.ham_channels,
        md_r_source=None if backbone_only else (
            f"create_model(md_r={md_r})" if md_r is not None else "create_model default (the variant's)"),
        new_weights=tuple(model.state_dict()))
    model.segnext_config = config
    if pretrained_backbone is None:
        return model
    source = _load_exact(pretrained_backbone, device="cpu", dtype=None, md_r=None, progress=progress)
    found = source.segnext_config
    if found.variant != spec.name:
        raise BadInputError(f"{pretrained_backbone} holds SegNeXt-{found.variant.upper()} weights "
                            f"({found.kind}); create_model was asked for SegNeXt-{spec.name.upper()}")
    weights = source if found.is_backbone else source.backbone
    target = model if backbone_only else model.backbone
    target.load_state_dict(weights.state_dict(), strict=True)  # same variant: every key, every shape
    model.segnext_config = config = config.replace(
        pretrained_backbone=str(pretrained_backbone),
        new_weights=() if backbone_only else tuple(f"decode_head.{k}" for k in model.decode_head.state_dict()))
    if config.new_weights:
        logger.info("backbone from %s; newly initialised: %s", pretrained_backbone, ", ".join(config.new_weights))
    return model


def _load_exact(name_or_path: Union[str, Path], *, device: Union[str, torch.device], dtype: Optional[torch.dtype],
                md_r: Optional[int], progress: Optional[bool]) -> nn.Module:
    kwargs = {"device": device, "dtype": dtype, "md_r": md_r}
    source = resolve(name_or_path)
    if source.kind == "hf":
        return load_folder(download_repo(source.name), **kwargs)
    if source.kind == "path":
        return load_file_path(source.path, **kwargs)
    config, state = read_cached(source.name, progress=progress)
    return build_from_config(config, state, **kwargs)


def source_file(name_or_path: Union[str, Path]) -> Path:
    """The one file a name or path designates, for commands that read a file (convert):
    a registry name's cached weights (pulled if needed), an hf:// repo's weights, or the path."""
    source = resolve(name_or_path)
    if source.kind == "registry":
        return pull(source.name).path / MODEL_FILE
    if source.kind == "hf":
        return download_repo(source.name) / MODEL_FILE
    return source.path
