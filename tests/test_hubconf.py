"""torch.hub.load on this repository (source='local'), random and pretrained."""

from __future__ import annotations

from pathlib import Path

import torch

from segnext_hub.models import MSCAN, SegNeXt

REPO = Path(__file__).resolve().parents[1]


def test_entry_points_and_dependencies():
    import importlib

    from tests.helpers.scripts import load_script

    hubconf = load_script(REPO / "hubconf.py", "hubconf")
    for name in ("mscan_t", "mscan_s", "mscan_b", "mscan_l", "mscan_t_in1k", "mscan_l_in1k"):
        assert callable(getattr(hubconf, name))
    assert "ADE20K" in hubconf.mscan_b.__doc__
    for module in hubconf.dependencies:  # torch.hub checks these before loading
        importlib.import_module(module)


def test_random_and_pretrained(mirror):
    model = torch.hub.load(str(REPO), "mscan_t", source="local", pretrained=False)
    assert isinstance(model, SegNeXt) and model.decode_head.md_r == 16
    assert isinstance(torch.hub.load(str(REPO), "mscan_s_in1k", source="local"), MSCAN)
    mirror.serve("mscan-t")
    pretrained = torch.hub.load(str(REPO), "mscan_t", source="local", pretrained=True)
    assert isinstance(pretrained, SegNeXt) and not pretrained.training
    assert not torch.equal(pretrained.state_dict()["decode_head.conv_seg.weight"],
                           model.state_dict()["decode_head.conv_seg.weight"])
