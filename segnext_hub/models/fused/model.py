"""An inference-only SegNeXt: the exact model's math, rearranged to run faster.

``fuse(model)`` builds a new model and leaves the exact one untouched. The fused model
computes the same function as the exact model in eval mode, up to floating-point
rounding (about 1e-5 on the logits), but it is not bit-identical to MMSegmentation:
use the exact model when you need that.

What changes, and why it is allowed:

* Eval-mode BatchNorm is a per-channel affine map, so it folds into the convolution
  before it (stem, patch embeds) or after it (a block's pre-norms into ``proj_1`` and
  ``fc1``). The attention's inner residual also adds the normalised input, so the block
  becomes ``x' = (1 + ls1*s1) * x + proj_2'(...)`` with norm1's scale ``s1``, its shift and
  the layer scale folded into ``proj_2``; the MLP has no inner residual and ``ls2`` folds
  into ``fc2``.
* 1x1 convolutions commute with bilinear resizing and with the NMF reconstruction, so the
  head's squeeze convolution runs on each stage before resizing (on 1/16 and 1/64 of the
  pixels), and ``ham_out`` is applied to the rank-R bases instead of the full map.
* Channels-last activations, convolutions with fused GELU / gate / residual epilogues and
  in-place updates cut memory traffic and allocations, which dominate on CPU.
* NMF keeps its arithmetic but not its allocations; it runs in float32 (or float64) even
  under autocast.

Optional: autocast to bfloat16/float16, CUDA graphs for repeated input shapes, and
``torch.compile`` of the backbone (off by default; it falls back to eager with a
warning where it cannot compile).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
import time
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Optional, Sequence, TYPE_CHECKING, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..ham_head import NMF2D, LightHamHead
from ..mscan import MSCAN, MSCABlock
from ..predict import SegmentationInference
from .ops import FusedConv, activate_, nmf_multiplicative

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # the config lives above models; models import nothing else from the package
    from ...config import ArtifactConfig


@dataclass(frozen=True)
class FuseOptions:
    """How the fused model runs; see :func:`fuse`."""

    channels_last: bool = True
    autocast_dtype: Optional[torch.dtype] = None
    cuda_graphs: bool = False
    compile: bool = False


def fuse(model: nn.Module, *, channels_last: bool = True, autocast_dtype: Optional[torch.dtype] = None,
         cuda_graphs: bool = False, compile: bool = False) -> nn.Module:
    """A new inference-only model computing what ``model`` computes in eval mode.

    ``model`` is a :class:`SegNeXt` or a bare :class:`MSCAN`; it is not modified, and the
    fused copy lives on the same device in the same dtype. Options:
    ``channels_last`` (default on: faster on CPU and on tensor-core GPUs);
    ``autocast_dtype`` (``torch.bfloat16`` / ``torch.float16``: mixed precision, NMF stays
    float32); ``cuda_graphs`` (replay a captured graph per input shape on CUDA; the NMF
    bases are still drawn outside the graph, the same way); ``compile`` (``torch.compile``
    the backbone; falls back to eager with a warning where that fails).
    """
    if autocast_dtype not in (None, torch.bfloat16, torch.float16):
        raise ValueError(f"autocast_dtype must be None, torch.bfloat16 or torch.float16, "
                         f"got {autocast_dtype}")
    options = FuseOptions(channels_last, autocast_dtype, cuda_graphs, compile)
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    if cuda_graphs and device.type != "cuda":
        warnings.warn(f"fuse(cuda_graphs=True): the model is on {device}, and graphs are captured only for "
                      "CUDA inputs; on this device it runs without them (move the model to CUDA first)",
                      RuntimeWarning, stacklevel=2)
    # A segmentor is recognised by its parts, so this module never imports the exact model.
    if isinstance(model, MSCAN):
        builder = FusedMSCAN
    elif isinstance(getattr(model, "backbone", None), MSCAN) and isinstance(
            getattr(model, "decode_head", None), LightHamHead):
        builder = FusedSegNeXt
    else:
        raise TypeError(f"fuse() takes a SegNeXt or an MSCAN, got {type(model).__name__}")
    with torch.no_grad():
        fused = builder(model, options)
    return fused.eval()


# ---------------------------------------------------------------------------- folding
def _bn_stats(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
    """Running mean and variance, weight and bias, in float64 to keep folding exact."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    parts = (bn.running_mean, bn.running_var, bn.weight, bn.bias)
    mean, var, weight, bias = (None if t is None else t.detach().double() for t in parts)
    return mean, var, weight, bias  # type: ignore[return-value]


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as ``scale * x + shift``: for a BatchNorm *before* a conv (the
    blocks' pre-norms), which torch's fusion helpers do not cover."""
    mean, var, weight, bias = _bn_stats(bn)
    scale = (weight if weight is not None else torch.ones_like(var)) / torch.sqrt(var + bn.eps)
    return scale, (bias if bias is not None else torch.zeros_like(var)) - mean * scale


def _fold_bn(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> FusedConv:
    """BatchNorm *after* a conv, folded by ``torch.nn.utils.fusion.fuse_conv_bn_weights``
    (fed float64, so it rounds once, when the result is cast to the model's dtype)."""
    mean, var, bn_weight, bn_bias = _bn_stats(bn)
    weight, bias = fuse_conv_bn_weights(*_conv_parts(conv), mean, var, bn.eps, bn_weight, bn_bias)
    return _frozen(conv, weight.detach(), bias.detach())


def _conv_parts(conv: nn.Conv2d) -> tuple[Tensor, Tensor]:
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else weight.new_zeros(weight.shape[0])
    return weight, bias


def _frozen(conv: nn.Conv2d, weight: Tensor, bias: Optional[Tensor]) -> FusedConv:
    """A FusedConv with ``conv``'s geometry and dtype, and the given weight and bias."""
    dtype = conv.weight.dtype
    return FusedConv(weight.to(dtype), None if bias is None else bias.to(dtype),
                     tuple(conv.stride), tuple(conv.padding), conv.groups)


def _copy(conv: nn.Conv2d) -> FusedConv:
    return _frozen(conv, conv.weight, conv.bias)


def _fold_output_affine(conv: nn.Conv2d, scale: Tensor, shift: Tensor) -> FusedConv:
    """affine(conv(x)) as one conv: a layer scale (BatchNorms after a conv use _fold_bn)."""
    weight, bias = _conv_parts(conv)
    return _frozen(conv, weight * scale.view(-1, 1, 1, 1), bias * scale + shift)


def _fold_input_affine(conv: nn.Conv2d, scale: Tensor, shift: Tensor) -> FusedConv:
    """conv(affine(x)) as one conv; only exact for 1x1 convs (no zero padding)."""
    if tuple(conv.kernel_size) != (1, 1) or conv.groups != 1:
        raise ValueError("an input affine folds only into a dense 1x1 convolution")
    weight, bias = _conv_parts(conv)
    return _frozen(conv, weight * scale.view(1, -1, 1, 1), bias + weight.flatten(1) @ shift)


class _InferenceOnly(nn.Module):
    """Fused models run eval-mode math only; training them would silently do the wrong thing."""

    #: The exact model's config (``segnext_hub.load(..., fast=True)`` carries it over).
    segnext_config: Optional[ArtifactConfig] = None

    def train(self, mode: bool = True) -> "_InferenceOnly":
        if mode:
            raise RuntimeError(
                f"{type(self).__name__} is inference-only (BatchNorms and layer scales are folded "
                "into the weights); train the exact model and call fuse() again")
        return super().train(False)


# ---------------------------------------------------------------------------- backbone
class FusedBlock(nn.Module):
    """One MSCA block with norms and layer scales folded; updates its input in place."""

    def __init__(self, block: MSCABlock) -> None:
        super().__init__()
        s1, t1 = _bn_affine(block.norm1)
        s2, t2 = _bn_affine(block.norm2)
        ls1 = block.layer_scale_1.detach().double()
        ls2 = block.layer_scale_2.detach().double()
        attn, msca, mlp = block.attn, block.attn.spatial_gating_unit, block.mlp
        self.proj_1 = _fold_input_affine(attn.proj_1, s1, t1)
        self.conv0 = _copy(msca.conv0)
        self.strips = nn.ModuleList(
            nn.ModuleList([_copy(getattr(msca, f"conv{i}_1")), _copy(getattr(msca, f"conv{i}_2"))])
            for i in range(msca.num_strips))
        self.conv3 = _copy(msca.conv3)
        # x + ls1*(proj_2(m) + s1*x + t1) = (1 + ls1*s1)*x + [ls1*proj_2 + ls1*t1](m)
        self.proj_2 = _fold_output_affine(attn.proj_2, ls1, ls1 * t1)
        self.register_buffer("residual_scale", (1 + ls1 * s1).view(1, -1, 1, 1).to(block.layer_scale_1.dtype))
        self.fc1 = _fold_input_affine(mlp.fc1, s2, t2)
        self.dwconv = _copy(mlp.dwconv)
        self.fc2 = _fold_output_affine(mlp.fc2, ls2, torch.zeros_like(ls2))

    def forward(self, x: Tensor) -> Tensor:
        u = self.proj_1(x, "gelu")
        attn = self.conv0(u)
        # Every strip reads the 5x5 output, so take their first halves before summing into it.
        halves = [first(attn) for first, _ in self.strips]
        for (_, second), half in zip(self.strips, halves):
            attn = second.add_(attn, half)
        gated = self.conv3.mul(attn, u)
        x = self.proj_2.add_(x.mul_(self.residual_scale), gated)
        rows = _mlp_band_rows(x, self.fc1.weight.shape[0])
        if rows is None:
            return self.fc2.add_(x, self.dwconv(self.fc1(x), "gelu"))
        return self._banded_mlp(x, rows)

    def _banded_mlp(self, x: Tensor, rows: int) -> Tensor:
        """x + mlp(x), a band of rows at a time (with a 1-row halo for the 3x3 conv).

        The hidden activations are mlp_ratio (8) times wider than x; at stride 4 they are
        tens of MB, and a fresh buffer of that size usually costs page faults (glibc hands
        it back to the OS on free) and trips to memory. Bands of a few MB are reused from
        the heap and stay in cache between fc1, the depth-wise conv and fc2; the halo row
        recomputed per band costs less than that (measured on B: 408 vs 494 ms per forward).
        """
        out = x.clone(memory_format=torch.channels_last)  # bands read x's un-updated halo rows
        height = x.shape[2]
        for n in range(x.shape[0]):
            for top in range(0, height, rows):
                bottom = min(top + rows, height)
                lo, hi = max(top - 1, 0), min(bottom + 1, height)
                hidden = self.dwconv(self.fc1(x[n:n + 1, :, lo:hi]), "gelu")[:, :, top - lo:bottom - lo]
                self.fc2.add_(out[n:n + 1, :, top:bottom], hidden)
        return out


# Banding pays off once one image's hidden activations outgrow the caches and malloc's
# reuse threshold; below that a single pass is as fast. Bands of >= 16 rows keep the
# halo overhead (2 rows of fc1) small; 2-8 MB bands measured alike.
_BAND_MIN_BYTES = 8 << 20
_BAND_TARGET_BYTES = 4 << 20
_BAND_MIN_ROWS = 16


def _mlp_band_rows(x: Tensor, hidden: int) -> Optional[int]:
    """Rows per band for the MLP, or None to run it in one pass."""
    if x.device.type != "cpu" or not x.is_contiguous(memory_format=torch.channels_last):
        return None
    height, width = x.shape[2:]
    row_bytes = hidden * width * x.element_size()
    if row_bytes * height < _BAND_MIN_BYTES:
        return None
    rows = max(_BAND_TARGET_BYTES // row_bytes, _BAND_MIN_ROWS)
    return rows if rows < height else None


def _fused_embed(embed: nn.Module) -> nn.ModuleList:
    """Stem (conv-BN-GELU-conv-BN) or patch embed (conv-BN) as folded convs."""
    if hasattr(embed, "norm"):
        return nn.ModuleList([_fold_bn(embed.proj, embed.norm)])
    conv_a, bn_a, _, conv_b, bn_b = embed.proj
    return nn.ModuleList([_fold_bn(conv_a, bn_a), _fold_bn(conv_b, bn_b)])


def _memory_format(options: FuseOptions) -> torch.memory_format:
    return torch.channels_last if options.channels_last else torch.contiguous_format


def _to_memory_format_(module: nn.Module, memory_format: torch.memory_format) -> None:
    for param in module.parameters():
        if param.ndim == 4:
            param.data = param.data.contiguous(memory_format=memory_format)


class FusedMSCAN(_InferenceOnly):
    """The backbone, fused: ``forward`` returns the four stage outputs like :class:`MSCAN`."""

    def __init__(self, backbone: MSCAN, options: FuseOptions = FuseOptions()) -> None:
        super().__init__()
        self.options = options
        self.memory_format = _memory_format(options)
        self.num_stages = backbone.num_stages
        self.embed_dims = backbone.embed_dims
        self.embeds = nn.ModuleList(_fused_embed(getattr(backbone, f"patch_embed{i + 1}"))
                                    for i in range(self.num_stages))
        self.stages = nn.ModuleList(nn.ModuleList(FusedBlock(b) for b in getattr(backbone, f"block{i + 1}"))
                                    for i in range(self.num_stages))
        self.norms = nn.ModuleList(copy.deepcopy(getattr(backbone, f"norm{i + 1}"))
                                   for i in range(self.num_stages))
        self.requires_grad_(False)
        _to_memory_format_(self, self.memory_format)
        self._features = _maybe_compiled(self._features_eager, options.compile)
        self._graphs = _GraphCache(self._forward_impl) if options.cuda_graphs else None

    def features(self, x: Tensor) -> list[Tensor]:
        """Stage outputs in the fused model's memory format (what the fused head reads)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"MSCAN expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        with _autocast(x, self.options):
            return self._features(x)

    def _features_eager(self, x: Tensor) -> list[Tensor]:
        x = x.contiguous(memory_format=self.memory_format)
        outs = []
        for embed, blocks, norm in zip(self.embeds, self.stages, self.norms):
            for i, conv in enumerate(embed):
                x = conv(x, "gelu" if i + 1 < len(embed) else None)
            # Under autocast the convs run in low precision, but the residual stream stays in
            # the parameters' dtype, as it would in a mixed-precision-trained model.
            x = x.to(norm.weight.dtype)
            for block in blocks:
                x = block(x)
            # LayerNorm over channels: on the NHWC view, which is contiguous when channels-last.
            x = F.layer_norm(x.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias, norm.eps)
            x = x.permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format)
            outs.append(x)
        return outs

    def _forward_impl(self, x: Tensor) -> list[Tensor]:
        return self.features(x)

    @torch.inference_mode()
    def forward(self, x: Tensor) -> list[Tensor]:
        if self._graphs is not None and x.is_cuda:
            outs = self._graphs(x)
        else:
            outs = self.features(x)
        return [out.contiguous() for out in outs]


# ---------------------------------------------------------------------------- head
class FusedHead(nn.Module):
    """LightHamHead with the squeeze conv split per stage and ham_out folded into NMF."""

    def __init__(self, head: LightHamHead, options: FuseOptions = FuseOptions()) -> None:
        super().__init__()
        self.memory_format = _memory_format(options)
        self.in_index = head.in_index
        self.num_classes = head.num_classes
        squeeze = head.squeeze.conv
        pieces = torch.split(squeeze.weight, list(head.in_channels), dim=1)
        biases = [squeeze.bias] + [None] * (len(pieces) - 1)  # the bias, if any, is added once
        self.squeeze = nn.ModuleList(_frozen(squeeze, w, b) for w, b in zip(pieces, biases))
        self.squeeze_gn = copy.deepcopy(head.squeeze.gn)
        ham = head.hamburger
        self.ham_in = _copy(ham.ham_in.conv)
        # Draws bases with the exact model's code, so the RNG stream is consumed identically.
        self.sampler = NMF2D(ham.ham.rank, ham.ham.steps, ham.ham.train_steps, ham.ham.groups).eval()
        self.sampler.generator = ham.ham.generator
        if ham.ham_out.conv.bias is not None:
            raise ValueError("expected ham_out's convolution without bias (it is followed by GroupNorm)")
        self.ham_out_weight = nn.Parameter(ham.ham_out.conv.weight.detach().flatten(1).clone(),
                                           requires_grad=False)
        self.ham_out_gn = copy.deepcopy(ham.ham_out.gn)
        self.align = _copy(head.align.conv)
        self.align_gn = copy.deepcopy(head.align.gn)
        self.conv_seg = _copy(head.conv_seg)

    @property
    def ham_channels(self) -> int:
        return self.ham_out_weight.shape[0]

    def draw_bases(self, batch: int, device: torch.device, generator: Optional[torch.Generator] = None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
        """The initial NMF bases the exact model would draw for this batch."""
        dim = self.ham_channels // self.sampler.groups
        return self.sampler.draw_bases(batch, dim, device, dtype, generator)

    def forward(self, features: Sequence[Tensor], generator: Optional[torch.Generator] = None,
                bases: Optional[Tensor] = None) -> Tensor:
        x = activate_(self.squeeze_gn(self._squeeze([features[i] for i in self.in_index])), "relu")
        x = self._hamburger(x, generator, bases)
        x = activate_(self.align_gn(self.align(x)), "relu")
        with torch.autocast(x.device.type, enabled=False):
            # Logits in the parameters' precision: bf16 rounding alone would flip near-ties.
            return self.conv_seg(x.to(self.conv_seg.weight.dtype))

    def _squeeze(self, inputs: Sequence[Tensor]) -> Tensor:
        """squeeze(cat(resize(f_i))) = sum_i resize(squeeze_i(f_i)): convs at low resolution."""
        size = inputs[0].shape[2:]
        acc: Optional[Tensor] = None
        for conv, feature in reversed(list(zip(self.squeeze, inputs))[1:]):
            part = conv(feature)
            if part.shape[2:] != size:
                part = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
            acc = part if acc is None else acc.add_(part)
        if acc is None:
            return self.squeeze[0](inputs[0])
        return self.squeeze[0].add_(acc.contiguous(memory_format=self.memory_format), inputs[0])

    def _hamburger(self, x: Tensor, generator: Optional[torch.Generator], bases: Optional[Tensor]) -> Tensor:
        enjoy = self.ham_in(x, "relu")
        batch, channels, height, width = enjoy.shape
        groups = self.sampler.groups
        dim = channels // groups
        dtype = torch.promote_types(enjoy.dtype, torch.float32)  # never below float32
        with torch.autocast(x.device.type, enabled=False):
            # x^T per group: a free view of channels-last activations when groups == 1.
            xt = (enjoy.to(dtype).permute(0, 2, 3, 1).reshape(batch, height * width, groups, dim)
                  .transpose(1, 2).reshape(batch * groups, height * width, dim))
            if bases is None:
                bases = self.draw_bases(batch, x.device, generator, dtype)
            else:
                bases = bases.to(device=x.device, dtype=dtype, copy=True)
            coef, bases = nmf_multiplicative(xt, bases, self.sampler.steps)
            out = self._ham_out(coef, bases, batch, height, width)
            out = self.ham_out_gn(out)
        return activate_(out.add_(x), "relu")

    def _ham_out(self, coef: Tensor, bases: Tensor, batch: int, height: int, width: int) -> Tensor:
        """ham_out(bases @ coef^T) computed as (W @ bases) @ coef^T: R columns, not H*W."""
        groups = self.sampler.groups
        channels = self.ham_channels
        rank = bases.shape[-1]
        weight = self.ham_out_weight.to(bases.dtype).view(channels, groups, -1).transpose(0, 1)  # (S, C, D)
        projected = torch.matmul(weight, bases.view(batch, groups, -1, rank))  # (B, S, C, R)
        projected = projected.permute(0, 2, 1, 3).reshape(batch, channels, groups * rank)
        pixels = height * width
        coef = coef.view(batch, groups, pixels, rank).transpose(1, 2).reshape(batch, pixels, groups * rank)
        out = torch.bmm(coef, projected.transpose(1, 2))  # (B, N, C): channels-last already
        out = out.view(batch, height, width, channels).permute(0, 3, 1, 2)
        return out.contiguous(memory_format=self.memory_format)


# ---------------------------------------------------------------------------- model
class FusedSegNeXt(SegmentationInference, _InferenceOnly):
    """Fused SegNeXt: ``model(x, generator=None, bases=None)`` returns 1/8-size logits.

    NMF bases are drawn exactly as the exact model draws them (same RNG consumption), so
    ``torch.manual_seed(s)`` before a forward, a generator, or explicit ``bases`` give
    comparable results between the two. ``predict`` works as :meth:`SegNeXt.predict`.
    """

    def __init__(self, model: nn.Module, options: FuseOptions = FuseOptions()) -> None:
        super().__init__()
        self.options = options
        self.backbone = FusedMSCAN(model.backbone, replace(options, cuda_graphs=False))
        self.decode_head = FusedHead(model.decode_head, options)
        self.requires_grad_(False)
        _to_memory_format_(self.decode_head, _memory_format(options))
        self._graphs = _GraphCache(self._forward_impl) if options.cuda_graphs else None

    @property
    def num_classes(self) -> int:
        return self.decode_head.num_classes

    def set_generator(self, generator: Optional[torch.Generator]) -> None:
        """Make every later forward draw NMF bases from ``generator`` (None: global RNG)."""
        self.decode_head.sampler.generator = generator

    @torch.inference_mode()
    def forward(self, x: Tensor, generator: Optional[torch.Generator] = None,
                bases: Optional[Tensor] = None) -> Tensor:
        if self._graphs is not None and x.is_cuda:
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"MSCAN expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
            dtype = torch.promote_types(self.decode_head.conv_seg.weight.dtype, torch.float32)
            if bases is None:
                bases = self.decode_head.draw_bases(x.shape[0], x.device, generator, dtype)
            logits = self._graphs(x, bases.to(device=x.device, dtype=dtype))
        else:
            logits = self._forward_impl(x, bases, generator)
        return logits.contiguous()

    def _forward_impl(self, x: Tensor, bases: Optional[Tensor],
                      generator: Optional[torch.Generator] = None) -> Tensor:
        features = self.backbone.features(x)
        with _autocast(x, self.options):
            return self.decode_head(features, generator=generator, bases=bases)


# ---------------------------------------------------------------------------- runtime options
def _autocast(x: Tensor, options: FuseOptions) -> torch.autocast:
    dtype = options.autocast_dtype
    return torch.autocast(x.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def _maybe_compiled(fn: Callable, enabled: bool) -> Callable:
    """``torch.compile(fn)`` that falls back to ``fn`` (once, with a warning) if compiling fails."""
    if not enabled:
        return fn
    try:
        compiled = torch.compile(fn, dynamic=False)
    except Exception as err:  # e.g. an unsupported Python version
        warnings.warn(f"torch.compile is unavailable ({err}); running eagerly", RuntimeWarning)
        return fn
    state = {"fn": compiled}

    seen: set = set()

    def run(*args: Tensor) -> object:
        if state["fn"] is not fn:
            try:
                with _inductor_freezing(), _compile_progress(args, seen):
                    return state["fn"](*args)
            except Exception as err:  # no C++ compiler, unsupported op, ...
                warnings.warn(f"torch.compile failed ({type(err).__name__}: {err}); running eagerly",
                              RuntimeWarning)
                state["fn"] = fn
        return fn(*args)

    return run


@contextlib.contextmanager
def _compile_progress(args: Sequence[Tensor], seen: set) -> Iterator[None]:
    """The first call per input shape compiles (about a minute on a CPU): say so in a log
    line, and on a terminal with a bar that closes when it is done."""
    key = tuple(tuple(t.shape) for t in args if isinstance(t, Tensor))
    if key in seen:
        yield
        return
    seen.add(key)
    shape = "x".join(str(d) for d in key[0]) if key else "?"
    logger.info("torch.compile: compiling the backbone for input %s (first call per shape; "
                "about a minute on a CPU)", shape)
    from tqdm import tqdm

    bar = tqdm(total=1, desc=f"torch.compile for {shape} (first call)", file=sys.stderr,
               disable=not sys.stderr.isatty(), leave=False)
    started = time.perf_counter()
    try:
        yield
    finally:
        bar.update()
        bar.close()
        logger.info("torch.compile: input %s ready after %.1f s", shape, time.perf_counter() - started)


def _inductor_freezing() -> contextlib.AbstractContextManager:
    """Inductor's weight freezing, for the compiles this call triggers only.

    Frozen weights are constants to Inductor: it prepacks them and fuses convolution
    epilogues itself (measured: without it the compiled backbone is slower than eager).
    The per-compile ``options={"freezing": True}`` is not honoured, hence the patch.
    """
    try:
        import torch._inductor.config as inductor_config
    except ImportError:
        return contextlib.nullcontext()
    return inductor_config.patch(freezing=True)


class _GraphCache:
    """Captures ``body`` once per input signature in a CUDA graph and replays it.

    Inputs are copied into static buffers; outputs are cloned out of the graph's pool,
    so callers may keep them. Only tensors may be passed (they are all static inputs).
    """

    def __init__(self, body: Callable[..., Union[Tensor, list[Tensor]]]) -> None:
        self.body = body
        self.entries: dict[tuple, tuple] = {}

    def __call__(self, *inputs: Tensor) -> Union[Tensor, list[Tensor]]:
        key = tuple((t.shape, t.dtype, t.device) for t in inputs)
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = self._capture(inputs)
        graph, static_inputs, output = entry
        for static, value in zip(static_inputs, inputs):
            static.copy_(value)
        graph.replay()
        if isinstance(output, Tensor):
            return output.clone()
        return [t.clone() for t in output]

    def _capture(self, inputs: Sequence[Tensor]) -> tuple:
        static_inputs = [t.clone() for t in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up: cuDNN autotuning and lazy init stay out of the graph
                self.body(*static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = self.body(*static_inputs)
        return graph, static_inputs, output
