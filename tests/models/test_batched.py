"""Batched inference gives each image what it gets alone (exact and fused models).

Evidence: the real models with random weights (``randomize_``) on generated images; the
reference is the same model at batch size 1. The fused model's logits agree bit for bit;
the exact model's first convolution (oneDNN) rounds differently at batch sizes above 1
(about 1e-5 on the logits), so its masks are compared exactly and its logits closely.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segnext_hub import create_model
from segnext_hub.models.random_init import randomize_

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZES = [(64, 64), (60, 64), (64, 64), (100, 70), (64, 64), (60, 62)]  # all but 100x70 pad to 64x64
SLIDE = dict(mode="slide", crop_size=(48, 48), stride=(32, 32))


@pytest.fixture(scope="module")
def models():
    exact = randomize_(create_model("t", md_r=16), seed=1, calibration_size=64, calibration_batches=1).eval()
    return {"exact": exact, "fused": exact.fuse()}


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


def _forward_batches(model, fn):
    """Batch sizes of the forwards ``fn`` runs."""
    seen = []
    handle = model.register_forward_hook(lambda mod, args, kwargs_out: seen.append(args[0].shape[0]))
    try:
        result = fn()
    finally:
        handle.remove()
    return result, seen


def _compare(kind, alone, batched):
    for a, b in zip(alone, batched, strict=True):
        assert torch.equal(a.mask, b.mask)
        if kind == "fused":
            assert torch.equal(a.logits, b.logits)
        else:
            torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", ["exact", "fused"])
@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_batched_equals_one_at_a_time(models, images, kind, mode):
    model = models[kind]
    kwargs = dict(scale=None, return_logits=True, **(SLIDE if mode == "slide" else {"mode": "whole"}))
    # Global RNG: batch size 1 draws image after image; the batched run draws in that order too.
    torch.manual_seed(3)
    alone, single = _forward_batches(model, lambda: model.predict(images, **kwargs))
    torch.manual_seed(3)
    batched, sizes = _forward_batches(model, lambda: model.predict(images, batch_size=4, **kwargs))
    _compare(kind, alone, batched)
    assert set(single) == {1} and max(sizes) == 4 and len(sizes) < len(single)
    if mode == "whole":  # five images pad to 64x64 (4 + 1 forwards), 100x70 to 128x96 alone
        assert sorted(sizes) == [1, 1, 4]
    # One generator per image.
    gens = [torch.Generator().manual_seed(10 + i) for i in range(len(images))]
    alone = model.predict(images, generator=gens, **kwargs)
    gens = [torch.Generator().manual_seed(10 + i) for i in range(len(images))]
    _compare(kind, alone, model.predict(images, generator=gens, batch_size=3, **kwargs))
    # One generator for all, consumed in image order.
    alone = model.predict(images, generator=torch.Generator().manual_seed(4), **kwargs)
    _compare(kind, alone, model.predict(images, generator=torch.Generator().manual_seed(4), batch_size=8, **kwargs))


def test_batched_draws_differ_per_image(models, images):
    """Guard against a shared draw: the same image twice in one batch gets two different bases."""
    model = models["fused"]
    same = [images[0], images[0]]
    torch.manual_seed(0)
    a, b = model.predict(same, scale=None, batch_size=2, return_logits=True)
    assert not torch.equal(a.logits, b.logits)


def test_bad_batch_size(models, images):
    with pytest.raises(ValueError, match="batch_size"):
        models["fused"].predict(images[:1], batch_size=0)
    with pytest.raises(ValueError, match="generators"):
        models["fused"].predict(images[:2], generator=[None])
