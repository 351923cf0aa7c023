"""param_groups and the warm-up + poly schedule. Evidence: the rules as MMEngine states them
(substring match, longest key first); tests/parity/test_train_parity.py compares both with
the real MMEngine."""

from __future__ import annotations

import pytest
import torch

from segnext_hub.models import build_model
from segnext_hub.training.optim import param_groups, poly_schedule


def _settings(model, groups) -> dict:
    return {n: (g["lr"], g["weight_decay"]) for g in groups for n, p in model.named_parameters()
            if any(p is q for q in g["params"])}


def test_groups_follow_segnext_custom_keys():
    model = build_model("t", num_classes=4)
    settings = _settings(model, param_groups(model, lr=1e-4, weight_decay=0.05))
    assert len(settings) == len(list(model.parameters()))  # every parameter, once
    assert settings["decode_head.squeeze.gn.weight"] == (1e-4 * 10.0, 0.05)  # "head" wins over nothing else
    assert settings["decode_head.conv_seg.bias"] == (1e-4 * 10.0, 0.05)
    assert settings["backbone.block1.0.norm1.weight"] == (1e-4, 0.0)
    assert settings["backbone.norm4.bias"] == (1e-4, 0.0)
    assert settings["backbone.patch_embed2.norm.weight"] == (1e-4, 0.0)
    assert settings["backbone.patch_embed1.proj.1.weight"] == (1e-4, 0.05)  # the stem's BN is not named norm
    assert settings["backbone.block1.0.layer_scale_1"] == (1e-4, 0.05)


def test_longest_key_wins_then_alphabetical():
    model = torch.nn.Module()
    model.head_norm = torch.nn.Linear(1, 1)
    groups = param_groups(model, custom_keys={"norm": {"decay_mult": 0.0}, "head": {"lr_mult": 2.0},
                                              "head_norm": {"lr_mult": 3.0}})
    assert _settings(model, groups)["head_norm.weight"] == (6e-5 * 3.0, 0.01)
    groups = param_groups(model, custom_keys={"norm": {"decay_mult": 0.0}, "head": {"lr_mult": 2.0}})
    assert _settings(model, groups)["head_norm.weight"] == (6e-5 * 2.0, 0.01)  # same length: "head" < "norm"


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_schedule_shape():
    optimizer = _optimizer()
    scheduler = poly_schedule(optimizer, total_iters=12, warmup_iters=3, warmup_ratio=0.1)
    lrs = []
    for _ in range(14):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:3] == pytest.approx([0.1, 0.55, 1.0])
    assert lrs[3:12] == pytest.approx([1 - k / 8 for k in range(9)])
    assert lrs[11:] == [0.0, 0.0, 0.0]  # reaches eta_min at the last iteration and stays


def test_schedule_resumes_from_its_state_dict():
    first, optimizer = None, _optimizer()
    scheduler = poly_schedule(optimizer, total_iters=100, warmup_iters=10)
    for _ in range(37):
        optimizer.step()
        scheduler.step()
    first = scheduler.state_dict()
    optimizer2 = _optimizer()
    resumed = poly_schedule(optimizer2, total_iters=100, warmup_iters=10)
    resumed.load_state_dict(first)
    optimizer2.step()
    resumed.step()
    optimizer.step()
    scheduler.step()
    assert resumed.last_epoch == 38 and optimizer2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("warmup, total", [(1, 100), (99, 100), (-1, 100)])
def test_bad_schedule_lengths_are_refused(warmup, total):
    with pytest.raises(ValueError, match="warmup_iters"):
        poly_schedule(_optimizer(), total_iters=total, warmup_iters=warmup)
