"""The fused inference path against the exact model: accuracy budget, isolation, options."""

from __future__ import annotations

import copy
import functools
import io
import os

import numpy as np
import pytest
import torch

from segnext_hub import create_model
from segnext_hub.models import NMF2D
from segnext_hub.models.fused import model as fused_module
from segnext_hub.models.fused import ops as fused_ops
from segnext_hub.models.fused.model import FusedMSCAN, FusedSegNeXt, fuse
from segnext_hub.models.fused.ops import nmf_multiplicative
from segnext_hub.models.random_init import randomize_

# The budget from the fast-path issue: fused fp32 vs exact on CPU.
MAX_ABS_DIFF = 1e-4
MIN_ARGMAX_AGREEMENT = 0.9999
# Reduced precision on GPU (fp16); bf16 has 8 mantissa bits and random weights have
# small top-2 margins, so it gets a looser floor (see README, "Fast inference").
MIN_AGREEMENT_FP16 = 0.995
MIN_AGREEMENT_BF16 = 0.96  # measured on CPU autocast: 97.1-98.7% (fp16: 99.7%)

# Two sizes per variant, one not a multiple of 32 (and a batch of 2); L at one small size.
SHAPES = {
    "t": [(1, 3, 128, 160), (2, 3, 97, 75)],
    "s": [(1, 3, 128, 128), (1, 3, 75, 103)],
    "b": [(1, 3, 96, 128), (2, 3, 65, 91)],
    "l": [(1, 3, 75, 103)],
}
SEEDS = {"t": 11, "s": 12, "b": 13, "l": 14}

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module", autouse=True)
def one_thread_and_cleanup():
    """These tests check numbers, not speed: one thread avoids OpenMP barrier stalls,
    which on a shared 2-core machine made the file several times slower. The cached
    models (all four variants, exact and fused) are released afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    _models.cache_clear()


@functools.lru_cache(maxsize=None)
def _models(variant):
    """(exact model with realistic random weights, a copy of its state_dict, fused model)."""
    exact = randomize_(create_model(variant), seed=SEEDS[variant])
    before = {k: v.clone() for k, v in exact.state_dict().items()}
    return exact, before, fuse(exact)


@pytest.fixture(scope="module", params="tsbl")
def pair(request):
    return (request.param, *_models(request.param))


def _inputs(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 1.5


def _bases(model, batch, seed=3):
    return model.decode_head.draw_bases(batch, torch.device("cpu"), torch.Generator().manual_seed(seed))


def _agreement(a, b):
    return (a.argmax(1) == b.argmax(1)).float().mean().item()


def test_fused_logits_within_budget(pair):
    variant, exact, _, fused = pair
    for shape in SHAPES[variant]:
        x = _inputs(shape)
        bases = _bases(fused, shape[0])
        with torch.no_grad():
            want = exact(x, bases=bases)
        before = bases.clone()
        got = fused(x, bases=bases)
        assert torch.equal(bases, before)  # the caller's bases are not updated in place
        assert got.shape == want.shape and got.dtype == want.dtype
        diff = (got - want).abs().max().item()
        assert diff <= MAX_ABS_DIFF, f"{variant} {shape}: max abs diff {diff}"
        assert _agreement(got, want) >= MIN_ARGMAX_AGREEMENT


def test_fused_backbone_features_close(pair):
    variant, exact, _, fused = pair
    x = _inputs(SHAPES[variant][-1], seed=1)
    with torch.no_grad():
        want = exact.backbone(x)
    got = fused.backbone(x)
    assert len(got) == len(want) == 4
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.is_contiguous()
        torch.testing.assert_close(g, w, atol=MAX_ABS_DIFF, rtol=0)


def test_exact_model_untouched_by_fuse(pair):
    _, exact, before, _ = pair
    after = exact.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert all(p.requires_grad for p in exact.parameters())
    assert exact.training is False


def test_segnext_fuse_method_delegates():
    exact = create_model("t")
    fused = exact.fuse(channels_last=False)
    assert isinstance(fused, FusedSegNeXt) and fused.options.channels_last is False


def test_default_bases_are_drawn_like_the_exact_model():
    exact = _models("t")[0]
    fused = exact.fuse()
    x = _inputs((1, 3, 64, 96))
    torch.manual_seed(123)
    with torch.no_grad():
        want = exact(x)
    state_exact = torch.get_rng_state()
    torch.manual_seed(123)
    got = fused(x)
    assert torch.equal(torch.get_rng_state(), state_exact)  # same RNG consumption
    assert (got - want).abs().max().item() <= MAX_ABS_DIFF
    with torch.no_grad():
        want = exact(x, generator=torch.Generator().manual_seed(9))
    got = fused(x, generator=torch.Generator().manual_seed(9))
    assert (got - want).abs().max().item() <= MAX_ABS_DIFF
    fused.set_generator(torch.Generator().manual_seed(9))
    assert (fused(x) - want).abs().max().item() <= MAX_ABS_DIFF


def test_backbone_alone_fuses():
    backbone = _models("s")[0].backbone
    fused = fuse(backbone)
    assert isinstance(fused, FusedMSCAN)
    x = _inputs((2, 3, 70, 90))
    with torch.no_grad():
        want = backbone(x)
    for g, w in zip(fused(x), want):
        torch.testing.assert_close(g, w, atol=MAX_ABS_DIFF, rtol=0)
    with pytest.raises(ValueError, match="3, H, W"):
        fused(torch.zeros(1, 4, 32, 32))


def test_nmf_keeps_the_exact_arithmetic():
    """Same products in the same order: agreement to float64 rounding, bases not mutated."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((2, 64, 9, 7), generator=gen, dtype=torch.float64)
    nmf = NMF2D(rank=8).eval()
    bases = nmf.draw_bases(2, 64, x.device, x.dtype, gen)
    before = bases.clone()
    want = nmf(x, bases=bases)
    xt = x.flatten(2).transpose(1, 2).contiguous()
    coef, new_bases = nmf_multiplicative(xt, bases.clone(), nmf.steps)
    got = torch.bmm(new_bases, coef.transpose(1, 2)).view_as(x)
    assert torch.equal(bases, before)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_fused_model_is_inference_only():
    fused = fuse(create_model("t"))
    assert not fused.training
    assert not any(p.requires_grad for p in fused.parameters())
    with pytest.raises(RuntimeError, match="inference-only"):
        fused.train()
    fused.eval()  # allowed: it changes nothing
    out = fused(torch.zeros(1, 3, 64, 64))
    assert out.is_inference()


def test_fused_model_copies_and_saves_after_use():
    """Prepacked oneDNN weights are derived state: never in state_dict, copies, pickles."""
    _, _, fused = _models("t")
    x = _inputs((1, 3, 64, 64))
    bases = _bases(fused, 1)
    want = fused(x, bases=bases)  # builds the packed weights
    state = fused.state_dict()
    assert not any(t.is_mkldnn for t in state.values())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    clone = copy.deepcopy(fused)
    torch.testing.assert_close(clone(x, bases=bases), want, atol=0, rtol=0)
    as_double = copy.deepcopy(fused).double()  # new weights: the packed copies are rebuilt
    torch.testing.assert_close(as_double(x.double(), bases=bases.double()).float(), want,
                               atol=MAX_ABS_DIFF, rtol=0)
    other = fuse(randomize_(create_model("t"), seed=99))
    clone.load_state_dict(other.state_dict())  # overwritten in place: repacked too
    torch.testing.assert_close(clone(x, bases=bases), other(x, bases=bases), atol=0, rtol=0)


def test_fuse_rejects_what_it_cannot_fuse():
    with pytest.raises(TypeError, match="SegNeXt or an MSCAN"):
        fuse(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="autocast_dtype"):
        fuse(create_model("t"), autocast_dtype=torch.int8)


@pytest.fixture(scope="module")
def small_b():
    exact, _, fused = _models("b")
    return exact, fused


def test_banded_mlp_matches_single_pass(small_b, monkeypatch):
    """Force row bands (with edge bands shorter than the rest) at a small size."""
    exact, fused = small_b
    x = _inputs((2, 3, 65, 91))  # stride-4 maps of 17 rows: bands of 3, 3, ..., 2
    bases = _bases(fused, 2)
    single = fused(x, bases=bases)
    monkeypatch.setattr(fused_module, "_BAND_MIN_BYTES", 0)
    monkeypatch.setattr(fused_module, "_BAND_MIN_ROWS", 3)
    monkeypatch.setattr(fused_module, "_BAND_TARGET_BYTES", 1)
    banded = fused(x, bases=bases)
    with torch.no_grad():
        want = exact(x, bases=bases)
    assert (banded - single).abs().max().item() <= 1e-5
    assert (banded - want).abs().max().item() <= MAX_ABS_DIFF


def test_plain_kernels_without_onednn_or_channels_last(small_b, monkeypatch):
    """The portable path (CUDA, other CPUs' builds) computes the same function."""
    exact, fused = small_b
    x = _inputs((1, 3, 96, 128))
    bases = _bases(fused, 1)
    with torch.no_grad():
        want = exact(x, bases=bases)
    assert (fuse(exact, channels_last=False)(x, bases=bases) - want).abs().max().item() <= MAX_ABS_DIFF
    monkeypatch.setattr(fused_ops, "onednn_fusion_available", lambda: False)
    assert (fused(x, bases=bases) - want).abs().max().item() <= MAX_ABS_DIFF


def test_folding_is_exact_in_float64():
    """In float64 the rearranged math agrees to ~1e-14: the folds themselves are exact."""
    exact = copy.deepcopy(_models("t")[0]).double()
    fused = fuse(exact)
    x = _inputs((1, 3, 32, 48)).double()
    bases = _bases(fused, 1).double()
    with torch.no_grad():
        want = exact(x, bases=bases)
    got = fused(x, bases=bases)
    assert got.dtype == torch.float64
    assert (got - want).abs().max().item() <= 1e-10


def test_predict_matches_exact_predict():
    exact, _, fused = _models("t")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    for mode in ("whole", "slide"):
        kwargs = dict(mode=mode, scale=None, crop_size=(32, 32), stride=(24, 24), return_logits=True)
        want = exact.predict(image, generator=torch.Generator().manual_seed(1), **kwargs)[0]
        got = fused.predict(image, generator=torch.Generator().manual_seed(1), **kwargs)[0]
        assert (got.logits - want.logits).abs().max().item() <= MAX_ABS_DIFF
        assert (got.mask == want.mask).float().mean().item() >= MIN_ARGMAX_AGREEMENT


def test_cpu_autocast_keeps_nmf_and_logits_in_float32():
    exact = _models("t")[0]
    fused = fuse(exact, autocast_dtype=torch.bfloat16)
    x = _inputs((1, 3, 64, 64))
    bases = _bases(fused, 1)
    with torch.no_grad():
        want = exact(x, bases=bases)
    got = fused(x, bases=bases)
    assert got.dtype == torch.float32
    assert _agreement(got, want) >= 0.9  # bf16 on random weights: a smoke test only


def test_compile_failure_falls_back_to_eager(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    def compile_stub(fn, **kwargs):
        return broken

    monkeypatch.setattr(torch, "compile", compile_stub)
    exact = _models("t")[0]
    fused = fuse(exact, compile=True)
    x = _inputs((1, 3, 64, 64))
    bases = _bases(fused, 1)
    with pytest.warns(RuntimeWarning, match="running eagerly"):
        got = fused(x, bases=bases)
    with torch.no_grad():
        want = exact(x, bases=bases)
    assert (got - want).abs().max().item() <= MAX_ABS_DIFF
    fused(x, bases=bases)  # later calls go straight to eager


@pytest.mark.skipif(not os.environ.get("SEGNEXT_TEST_COMPILE"), reason="set SEGNEXT_TEST_COMPILE=1 (slow)")
def test_compiled_backbone_matches():
    exact = _models("t")[0]
    fused = fuse(exact, compile=True)
    x = _inputs((1, 3, 64, 64))
    bases = _bases(fused, 1)
    with torch.no_grad():
        want = exact(x, bases=bases)
    assert (fused(x, bases=bases) - want).abs().max().item() <= MAX_ABS_DIFF


# ---------------------------------------------------------------------------- GPU
@requires_cuda
@pytest.mark.parametrize("variant", "tsbl")
def test_gpu_fp32_and_reduced_precision(variant):
    exact = randomize_(create_model(variant), seed=SEEDS[variant])
    x = _inputs((2, 3, 256, 256))
    bases = _bases(fuse(exact), 2)
    with torch.no_grad():
        want = exact(x, bases=bases)
    cuda_exact = exact.cuda()
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # true fp32 convolutions
        got = fuse(cuda_exact)(x.cuda(), bases=bases).cpu()
    assert (got - want).abs().max().item() <= 1e-3  # GPU kernels sum in another order
    assert _agreement(got, want) >= 0.999
    for dtype, floor in ((torch.float16, MIN_AGREEMENT_FP16), (torch.bfloat16, MIN_AGREEMENT_BF16)):
        low = fuse(cuda_exact, autocast_dtype=dtype)(x.cuda(), bases=bases).cpu()
        agreement = _agreement(low, want)
        print(f"{variant} {dtype}: argmax agreement {agreement:.5f}")
        assert low.dtype == torch.float32 and agreement >= floor


@requires_cuda
def test_gpu_cuda_graphs_replay_the_same_function():
    exact = randomize_(create_model("t"), seed=1).cuda()
    eager = fuse(exact)
    graphed = fuse(exact, cuda_graphs=True)
    for seed in (1, 2):  # a second call replays with new inputs and bases
        x = _inputs((2, 3, 128, 128), seed=seed).cuda()
        bases = _bases(eager, 2, seed=seed)
        torch.testing.assert_close(graphed(x, bases=bases), eager(x, bases=bases), atol=1e-4, rtol=0)
    torch.manual_seed(5)
    a = graphed(x)
    torch.manual_seed(5)
    torch.testing.assert_close(a, eager(x), atol=1e-4, rtol=0)
