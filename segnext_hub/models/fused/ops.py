"""Kernels for the fused inference path: convolutions with fused epilogues, and NMF.

On CPU, most of SegNeXt's time outside the matrix multiplies goes to memory traffic and
to allocating (and page-faulting) large activation buffers, not to arithmetic. oneDNN
can apply GELU/ReLU, an element-wise product or a residual sum while the convolution's
output is still in cache, and can accumulate into an existing tensor; PyTorch exposes
that through the private ``torch.ops.mkldnn._convolution_pointwise`` family, which
TorchInductor uses for the same purpose (weights are also reordered once into oneDNN's
blocked layout instead of on every call). Being private, it is probed once and every
call falls back to ``F.conv2d`` plus in-place ops when it is missing, misbehaves, or
does not apply (CUDA, autocast, float64, tracing by ``torch.compile``).
"""

from __future__ import annotations

import functools
import weakref
from collections import OrderedDict
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ham_head import NMF_EPS

# oneDNN's post-op names, and the algorithm argument that selects the exact (erf) GELU.
_POST_OPS = {None: ("none", ""), "gelu": ("gelu", "none"), "relu": ("relu", "")}


@functools.lru_cache(maxsize=None)
def onednn_fusion_available() -> bool:
    """Whether the private oneDNN fused-convolution ops exist and compute the right thing."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        ops = torch.ops.mkldnn
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 8, 5, 6, generator=gen).contiguous(memory_format=torch.channels_last)
        w = torch.randn(8, 8, 1, 1, generator=gen)
        b = torch.randn(8, generator=gen)
        plain = F.conv2d(x, w, b)
        acc = x.clone()
        ops._convolution_pointwise_.binary(acc, x, w, b, [0, 0], [1, 1], [1, 1], 1, "add",
                                           None, None, [], None)
        packed = ops._reorder_convolution_weight(w, [0, 0], [1, 1], [1, 1], 1, list(x.shape))
        checks = [
            (ops._convolution_pointwise(x, w, b, [0, 0], [1, 1], [1, 1], 1, "gelu", [], "none"),
             F.gelu(plain)),
            (ops._convolution_pointwise(x, packed, b, [0, 0], [1, 1], [1, 1], 1, "none", [], ""), plain),
            (ops._convolution_pointwise.binary(x, x, w, b, [0, 0], [1, 1], [1, 1], 1, "mul",
                                               None, None, [], None), plain * x),
            (acc, x + plain),
        ]
        return all(torch.allclose(got, want, atol=1e-5, rtol=1e-5) for got, want in checks)
    except (AttributeError, RuntimeError):
        return False


def _use_onednn(x: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and onednn_fusion_available()
    )


def activate_(x: Tensor, act: Optional[str]) -> Tensor:
    """In-place GELU (erf) or ReLU: saves a full-size allocation per call."""
    if act == "gelu":
        return torch.ops.aten.gelu_(x)
    if act == "relu":
        return x.relu_()
    return x


_PACKED: "weakref.WeakKeyDictionary[FusedConv, tuple]" = weakref.WeakKeyDictionary()
# Input shapes per conv with a packed weight: a banded MLP conv sees three (first, middle
# and last band), and one more lets two image sizes alternate.
_PACKED_SHAPES = 4


def _pack(weight: Tensor, padding: list[int], stride: list[int], groups: int,
          input_size: tuple[int, ...]) -> Tensor:
    """oneDNN's preferred weight layout for this conv (the weight itself if that fails)."""
    try:
        return torch.ops.mkldnn._reorder_convolution_weight(
            weight.contiguous(memory_format=torch.channels_last), padding, stride, [1, 1], groups,
            list(input_size))
    except (AttributeError, RuntimeError):
        return weight


class FusedConv(nn.Module):
    """A frozen convolution whose epilogue (activation, product, residual sum) is fused.

    The weights are parameters (so ``.to()``, ``.half()`` and ``next(parameters())`` work)
    but never require grad.
    """

    def __init__(self, weight: Tensor, bias: Optional[Tensor], stride: tuple[int, int] = (1, 1),
                 padding: tuple[int, int] = (0, 0), groups: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.stride = list(stride)
        self.padding = list(padding)
        self.groups = groups

    def extra_repr(self) -> str:
        out, inp = self.weight.shape[0], self.weight.shape[1] * self.groups
        return (f"{inp}, {out}, kernel_size={tuple(self.weight.shape[2:])}, stride={tuple(self.stride)}, "
                f"padding={tuple(self.padding)}, groups={self.groups}, bias={self.bias is not None}")

    def _plain(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)

    def _onednn_weight(self, x: Tensor) -> Tensor:
        """The weight, reordered into oneDNN's blocked layout for this input shape.

        Otherwise oneDNN reorders it on every call, which costs 10-25% of a call on the
        small late-stage maps. The layout oneDNN picks depends on the input shape (a copy
        packed for another shape is slower than none), so copies are kept per shape, for
        the few most recent shapes. They are derived state, held outside the module (so
        ``state_dict``, ``deepcopy`` and pickling never see an opaque tensor) and dropped
        when the weight is replaced or overwritten (``.to()``, ``load_state_dict``).
        """
        if not x.is_contiguous(memory_format=torch.channels_last):
            return self.weight
        owner = (self.weight.data_ptr(), self.weight.dtype, self.weight._version)
        cache = _PACKED.get(self)
        if cache is None or cache[0] != owner:
            cache = _PACKED[self] = (owner, OrderedDict())
        packs = cache[1]
        shape = tuple(x.shape)
        packed = packs.get(shape)
        if packed is None:
            packed = packs[shape] = _pack(self.weight, self.padding, self.stride, self.groups, shape)
            while len(packs) > _PACKED_SHAPES:
                packs.popitem(last=False)
        else:
            packs.move_to_end(shape)
        return packed

    def forward(self, x: Tensor, act: Optional[str] = None) -> Tensor:
        """conv(x), then ``act`` ("gelu", "relu" or None)."""
        if _use_onednn(x):
            attr, algorithm = _POST_OPS[act]
            return torch.ops.mkldnn._convolution_pointwise(
                x, self._onednn_weight(x), self.bias, self.padding, self.stride, [1, 1], self.groups,
                attr, [], algorithm)
        return activate_(self._plain(x), act)

    def mul(self, x: Tensor, other: Tensor) -> Tensor:
        """conv(x) * other (the MSCA gate)."""
        if _use_onednn(x) and other.dtype == x.dtype:
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, other, self._onednn_weight(x), self.bias, self.padding, self.stride, [1, 1], self.groups,
                "mul", None, None, [], None)
        return self._plain(x).mul_(other)

    def add_(self, acc: Tensor, x: Tensor) -> Tensor:
        """acc += conv(x), in place: a residual sum that allocates nothing on CPU."""
        if _use_onednn(x) and acc.dtype == x.dtype:
            return torch.ops.mkldnn._convolution_pointwise_.binary(
                acc, x, self._onednn_weight(x), self.bias, self.padding, self.stride, [1, 1], self.groups,
                "add", None, None, [], None)
        return acc.add_(self._plain(x))


def nmf_multiplicative(xt: Tensor, bases: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """NMF2D's iterations on ``xt`` = x^T (B, N, D) from ``bases`` (B, D, R).

    The arithmetic is the exact path's (same products, ``coef * num / (den + eps)`` in that
    order), but x^T is never materialised (channels-last activations already are x^T),
    x^T @ bases is not recomputed for the first update (the bases have not changed since
    the softmax), and the update buffers are reused, so the loop allocates nothing.
    ``bases`` is updated in place. Returns (coef, bases).
    """
    x = xt.transpose(1, 2)
    num_c = torch.bmm(xt, bases)
    coef = torch.softmax(num_c, dim=-1)
    den_c = torch.empty_like(coef)
    num_b, den_b = torch.empty_like(bases), torch.empty_like(bases)
    gram = bases.new_empty((bases.shape[0], bases.shape[2], bases.shape[2]))
    for step in range(steps + 1):  # steps x (coef, bases), then a last coef update
        if step:  # at step 0, num_c is still the softmax's input: the bases have not moved
            torch.bmm(xt, bases, out=num_c)
        torch.bmm(bases.transpose(1, 2), bases, out=gram)
        torch.bmm(coef, gram, out=den_c)
        coef.mul_(num_c).div_(den_c.add_(NMF_EPS))
        if step == steps:
            break
        torch.bmm(x, coef, out=num_b)
        torch.bmm(coef.transpose(1, 2), coef, out=gram)
        torch.bmm(bases, gram, out=den_b)
        bases.mul_(num_b).div_(den_b.add_(NMF_EPS))
    return coef, bases
