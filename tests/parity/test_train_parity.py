"""Training parity with MMSegmentation 1.2.2 (the parity virtualenv runs the real thing).

One iteration of SegNeXt-T and -L as MMSeg's runner does it -- same weights, the same batch
of 2 (random normalised images, random labels with a band of 255s), the same seed before the
forward, drop path as configured (0.1 and 0.3) -- against ``model.loss`` + ``param_groups`` +
AdamW here: the loss, every gradient, every parameter and BatchNorm statistic after the
step, and the RNG state after it (same draws in the same order); and, fed MMSeg's own
gradients, the AdamW step alone, bit for bit. Then the config's
warm-up + poly schedule at all 160,000 iterations, and the cross-entropy's averaging.
Evidence: real upstream code (mmseg 1.2.2, mmengine 0.10.7, mmcv-lite 2.1.0 from PyPI).
"""

from __future__ import annotations

import re

import pytest
import torch

from segnext_hub.models import build_model
from segnext_hub.models.loss import decode_loss
from segnext_hub.training.optim import param_groups, poly_schedule
from tests.helpers import factory
from tests.parity.harness import require_parity_env, run_mmseg

pytestmark = pytest.mark.parity

SEED = 1234
LR = 6e-5
# Conv biases feeding a train-mode BatchNorm: their exact gradient is 0 (the norm subtracts
# the batch mean), so both frameworks hold rounding noise there (~1e-9), and Adam's first
# step, which divides the gradient by its own magnitude, turns that noise into a step of
# about +-lr in either direction. They are checked for being noise, not for equality.
BEFORE_BATCHNORM = re.compile(r"backbone\.patch_embed\d\.proj(\.[03])?\.bias")


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    images = torch.randn((2, 3, 64, 64), generator=gen)
    labels = torch.randint(0, 150, (2, 64, 64), generator=gen)
    labels[0, :10] = 255
    labels[1, :, -7:] = 255
    return images, labels


@pytest.fixture(scope="module", params=["t", "l"])
def mmseg_step(request, tmp_path_factory) -> dict:
    """T, and L for its drop path rate (0.3) and its widest head (1024 channels)."""
    require_parity_env()
    variant = request.param
    work = tmp_path_factory.mktemp("train_parity")
    state = factory.mmseg_state(variant, seed=2, md_r=16)
    torch.save(state, work / "weights.pt")
    torch.save(_batch(), work / "batch.pt")
    job = {"variant": variant, "md_r": 16, "weights": str(work / "weights.pt"), "threads": 1,
           "train_step": {"batch": str(work / "batch.pt"), "seed": SEED}, "schedule": {"iters": 160_000}}
    return {"variant": variant, "state": state, **run_mmseg(job, work)}


@pytest.fixture(scope="module")
def our_step(mmseg_step) -> dict:
    torch.set_num_threads(1)
    model = build_model(mmseg_step["variant"], num_classes=150, md_r=16)
    model.load_state_dict(mmseg_step["state"])
    model.train()
    groups = param_groups(model)
    optimizer = torch.optim.AdamW(groups, lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01)
    images, labels = _batch()
    torch.manual_seed(SEED)
    loss = model.loss(images, labels)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    optimizer.step()
    return {"loss": loss.detach(), "grads": grads, "rng_after": torch.rand(4),
            "groups": {n: (g["lr"], g["weight_decay"]) for g in groups for n, p in model.named_parameters()
                       if any(p is q for q in g["params"])},
            "params": {n: p.detach().clone() for n, p in model.named_parameters()},
            "buffers": {n: b.clone() for n, b in model.named_buffers()}}


def _worst_relative(ours: dict, theirs: dict, skip: "re.Pattern | None" = None) -> tuple[float, str]:
    assert set(ours) == set(theirs)
    worst, where = 0.0, ""
    for name, value in ours.items():
        if skip is not None and skip.fullmatch(name):
            continue
        scale = theirs[name].abs().max().item() or 1.0
        diff = (value - theirs[name]).abs().max().item() / scale
        if diff > worst:
            worst, where = diff, name
    return worst, where


def test_the_loss_is_mmsegs(mmseg_step, our_step):
    theirs = mmseg_step["train_step"]
    assert theirs["loss_keys"] == ["decode.acc_seg", "decode.loss_ce"]
    print(f"{mmseg_step['variant']} loss: ours {our_step['loss'].item():.9g}, MMSeg {theirs['loss'].item():.9g}")
    assert torch.equal(our_step["loss"], theirs["loss"])  # the forward is bit for bit MMSeg's


def test_the_random_draws_are_mmsegs(mmseg_step, our_step):
    # Drop path, NMF bases and dropout consumed the global RNG exactly as MMSeg did.
    assert torch.equal(our_step["rng_after"], mmseg_step["train_step"]["rng_after"])


def test_every_gradient_is_mmsegs(mmseg_step, our_step):
    theirs = mmseg_step["train_step"]["grads"]
    worst, where = _worst_relative(our_step["grads"], theirs, skip=BEFORE_BATCHNORM)
    print(f"{mmseg_step['variant']} worst gradient difference: {worst:.3g} of its scale ({where})")
    assert worst <= 1e-5, where
    noise = [n for n in theirs if BEFORE_BATCHNORM.fullmatch(n)]
    assert len(noise) == 5
    for name in noise:
        weight_scale = theirs[name.replace(".bias", ".weight")].abs().max()
        for grads in (theirs, our_step["grads"]):
            assert grads[name].abs().max() <= 1e-5 * weight_scale, name


def test_param_groups_are_mmengines(mmseg_step, our_step):
    assert our_step["groups"] == mmseg_step["train_step"]["groups"]


def test_the_adamw_step_is_mmengines_bit_for_bit(mmseg_step):
    """Given MMSeg's own gradients, param_groups + torch AdamW move every parameter exactly
    as the config's optimiser wrapper did: the optimiser side alone, no tolerance."""
    theirs = mmseg_step["train_step"]
    model = build_model(mmseg_step["variant"], num_classes=150, md_r=16)
    model.load_state_dict(mmseg_step["state"])
    for name, param in model.named_parameters():
        param.grad = theirs["grads"][name].clone()
    torch.optim.AdamW(param_groups(model), lr=LR, betas=(0.9, 0.999), weight_decay=0.01).step()
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), theirs["params"][name]), name


def test_the_parameters_after_one_adamw_step_are_mmsegs(mmseg_step, our_step):
    """End to end. Adam's first step is lr * g / (|g| + eps): an element whose gradient is
    near eps turns the gradients' rounding differences (above) into a visible part of lr,
    so the bound is a fraction of lr; the figure relative to each tensor's scale is printed."""
    before = mmseg_step["state"]
    theirs = mmseg_step["train_step"]["params"]
    moved = sum(not torch.equal(theirs[n], before[n]) for n in theirs)
    assert moved > 0.9 * len(theirs)  # a real step: nearly every parameter moved
    worst, where = _worst_relative(our_step["params"], theirs, skip=BEFORE_BATCHNORM)
    largest = max((our_step["params"][n] - theirs[n]).abs().max().item() for n in theirs
                  if not BEFORE_BATCHNORM.fullmatch(n))
    print(f"{mmseg_step['variant']} worst parameter difference after one step: {worst:.3g} of its scale "
          f"({where}); largest {largest / LR:.3g} of lr")
    assert largest <= 0.25 * LR
    for name in theirs:
        if BEFORE_BATCHNORM.fullmatch(name):  # moved by at most ~lr each, noise-driven
            assert (our_step["params"][name] - theirs[name]).abs().max() <= 2.05 * LR, name
    worst, where = _worst_relative({k: v.double() for k, v in our_step["buffers"].items()},
                                   {k: v.double() for k, v in mmseg_step["train_step"]["buffers"].items()})
    assert worst <= 1e-6, where  # BatchNorm running statistics updated alike


def test_the_schedule_is_mmengines_at_every_iteration(mmseg_step):
    theirs = mmseg_step["schedule"]
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.AdamW([{"params": [params[0]]}, {"params": [params[1]], "lr": 6e-5 * 10.0}], lr=6e-5)
    scheduler = poly_schedule(optimizer)
    ours = torch.tensor([[scheduler.lr_at(g["initial_lr"], i) for g in optimizer.param_groups]
                         for i in range(len(theirs))], dtype=torch.float64)
    assert theirs.shape == (160_000, 2)
    worst = ((ours - theirs).abs() / torch.tensor([LR, LR * 10.0], dtype=torch.float64)).max().item()
    print(f"schedule: worst lr difference over 160000 iterations: {worst:.3g} of the base lr")
    assert worst <= 1e-12
    # The warm-up reaches the base lr at iteration 1499; the decay reaches 0 at the last one.
    torch.testing.assert_close(theirs[1499], torch.tensor([LR, LR * 10.0], dtype=torch.float64), rtol=1e-12, atol=0)
    assert theirs[-1].tolist() == [0.0, 0.0] and ours[-1].tolist() == [0.0, 0.0]
    # The stepped scheduler follows lr_at (the first 2000 iterations: warm-up and its hand-over).
    for i in range(2000):
        assert [g["lr"] for g in optimizer.param_groups] == [scheduler.lr_at(g["initial_lr"], i)
                                                             for g in optimizer.param_groups]
        optimizer.step()
        scheduler.step()


def test_cross_entropy_averaging_is_mmsegs(tmp_path):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn((2, 5, 16, 16), generator=gen)
    labels = torch.randint(0, 5, (2, 16, 16), generator=gen)
    labels[:, :6] = 255
    torch.save((logits, labels), tmp_path / "ce.pt")
    theirs = run_mmseg({"variant": "t", "md_r": 16, "cross_entropy": str(tmp_path / "ce.pt")}, tmp_path)
    for flag in (False, True):
        ours = decode_loss(logits, labels, avg_non_ignore=flag)
        torch.testing.assert_close(ours, theirs["cross_entropy"][flag], rtol=1e-6, atol=0)
    assert decode_loss(logits, labels) < decode_loss(logits, labels, avg_non_ignore=True)
