"""MSCAN as a segmentation_models_pytorch 0.6 encoder (``tu-segnext_mscan_t``).

Evidence: the real smp (0.6.0, in .venv-timm) builds Unet, FPN and UPerNet around the timm
model and one optimiser step runs on the CPU; smp treats MSCAN as a transformer-style encoder
(first feature at stride 4) and adds its own empty stride-2 feature.
"""

from __future__ import annotations

import pytest
import torch

from tests.timm.conftest import require_timm

require_timm()

import segmentation_models_pytorch as smp  # noqa: E402

import segnext_hub.timm  # noqa: E402,F401 - registers the models
from tests.helpers import factory  # noqa: E402


@pytest.mark.parametrize("arch", ["Unet", "FPN", "UPerNet"])
def test_smp_models_build_and_train_one_step(arch):
    torch.manual_seed(0)
    model = getattr(smp, arch)("tu-segnext_mscan_t", encoder_weights=None, classes=3).train()
    assert model.encoder._is_transformer_style
    images, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = model.encoder.model.model.block1[0].mlp.fc1.weight.detach().clone()
    logits = model(images)
    assert logits.shape == (2, 3, 64, 64)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(before, model.encoder.model.model.block1[0].mlp.fc1.weight)


def test_pretrained_encoder_through_a_file_equals_segnext_hubs_backbone(tmp_path):
    state = factory.mmseg_state("t", seed=2, backbone_only=True)
    path = factory.write_official_in1k(tmp_path / "mscan_t.pth", state)
    model = smp.Unet("tu-segnext_mscan_t", encoder_weights=True, classes=2,
                     pretrained_cfg_overlay=dict(file=str(path))).eval()
    encoder = model.encoder.model.model
    for key, value in state.items():
        assert torch.equal(encoder.state_dict()[key], value), key
