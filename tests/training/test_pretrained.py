"""Starting a fine-tuning run: ``load(..., num_classes=K)`` and ``create_model(...,
pretrained_backbone=...)``.

Evidence: checkpoint files in each published layout built by tests/helpers/factory.py
(containers as the real runners write them; the MMEngine one is checked against the real
mmengine in tests/parity), and a registry artifact served by a loopback mirror.
"""

from __future__ import annotations

import pytest
import torch

import segnext_hub
from segnext_hub.errors import BadInputError
from tests.helpers import factory


@pytest.fixture(scope="module")
def t_state() -> dict:
    return factory.mmseg_state("t", seed=3, num_classes=150, md_r=16)


@pytest.fixture(scope="module")
def t_file(tmp_path_factory, t_state):
    return factory.write_mmseg(tmp_path_factory.mktemp("ckpt") / "t.pth", t_state, md_r=16, seed=7)


def test_new_classes_keep_every_other_weight_and_get_mmseg_classifier_init(t_file, t_state):
    torch.manual_seed(0)
    model = segnext_hub.load(t_file, num_classes=5)
    state = model.state_dict()
    assert set(state) == set(t_state)
    for key, value in t_state.items():
        if "conv_seg" not in key:
            assert torch.equal(state[key], value), key
    weight, bias = state["decode_head.conv_seg.weight"], state["decode_head.conv_seg.bias"]
    assert weight.shape == (5, 256, 1, 1) and torch.equal(bias, torch.zeros(5))
    assert 0.0085 < weight.std().item() < 0.0115 and abs(weight.mean().item()) < 0.002  # normal, std 0.01
    config = model.segnext_config
    assert config.num_classes == 5 and model.num_classes == 5 and config.md_r == 16
    assert config.classes is None and config.dataset is None and config.training_seed is None
    assert config.new_weights == ("decode_head.conv_seg.weight", "decode_head.conv_seg.bias")
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5, 8, 8)


def test_the_same_class_count_keeps_the_classifier(t_file, t_state):
    model = segnext_hub.load(t_file, num_classes=150)
    assert torch.equal(model.decode_head.conv_seg.weight, t_state["decode_head.conv_seg.weight"])
    assert model.segnext_config.new_weights == ()


def test_a_loaded_model_trains_and_the_fused_one_refuses(t_file):
    model = segnext_hub.load(t_file, num_classes=3).train()
    labels = torch.randint(0, 3, (2, 64, 64))
    labels[:, :8] = 255
    model.loss(torch.randn(2, 3, 64, 64), labels).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    # The NMF is differentiable, as in MMSeg 1.2.2: the path through it reaches ham_in.
    assert grads["decode_head.hamburger.ham_in.conv.weight"].abs().sum() > 0
    fast = segnext_hub.load(t_file, num_classes=3, fast=True)
    with pytest.raises(RuntimeError, match="inference-only"):
        fast.train()


def test_training_writes_to_a_private_copy_never_to_the_file(t_file, tmp_path):
    converted = tmp_path / "t.safetensors"
    segnext_hub.convert(t_file, converted)
    before = converted.read_bytes()
    model = segnext_hub.load(converted, num_classes=4).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.loss(torch.randn(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))).backward()
    optimizer.step()
    assert converted.read_bytes() == before


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_a_bad_class_count_is_bad_input(t_file, bad):
    with pytest.raises(BadInputError, match="num_classes must be a positive integer"):
        segnext_hub.load(t_file, num_classes=bad)
    with pytest.raises(BadInputError, match="num_classes must be a positive integer"):
        segnext_hub.create_model("t", num_classes=bad)


def test_a_backbone_artifact_points_to_create_model(tmp_path):
    path = factory.write_official_in1k(tmp_path / "in1k.pth", factory.mmseg_state("t", backbone_only=True))
    with pytest.raises(BadInputError, match=r"ImageNet backbone.*create_model\('t', num_classes=4"):
        segnext_hub.load(path, num_classes=4)


@pytest.mark.parametrize("layout", ["official", "jittor", "segmentor"])
def test_create_model_takes_every_backbone_tensor_from_any_layout(tmp_path, layout):
    backbone = factory.mmseg_state("t", seed=5, backbone_only=True)
    if layout == "official":
        path = factory.write_official_in1k(tmp_path / "in1k.pth", backbone)
    elif layout == "jittor":
        path = factory.write_jittor(tmp_path / "in1k.pkl", backbone)
    else:  # a segmentor of the same variant gives its backbone
        full = factory.mmseg_state("t", seed=5, md_r=16)
        path = factory.write_mmseg(tmp_path / "seg.pth", full, md_r=16)
        backbone = {k[len("backbone."):]: v for k, v in full.items() if k.startswith("backbone.")}
    model = segnext_hub.create_model("t", num_classes=7, pretrained_backbone=path)
    state = model.state_dict()
    for key, value in backbone.items():
        if layout == "jittor" and key.endswith("num_batches_tracked"):
            continue  # Jittor files carry no BatchNorm counters
        assert torch.equal(state[f"backbone.{key}"], value), key
    head_keys = [k for k in state if k.startswith("decode_head.")]
    assert list(model.segnext_config.new_weights) == head_keys
    assert model.segnext_config.pretrained_backbone == str(path)
    assert model.num_classes == 7 and not model.training


def test_create_model_from_a_registry_backbone(mirror):
    art = mirror.serve("mscan-t-in1k")
    model = segnext_hub.create_model("t", num_classes=2, pretrained_backbone="mscan-t-in1k", progress=False)
    pulled = segnext_hub.load("mscan-t-in1k")
    assert art.kind == "backbone"
    for key, value in pulled.state_dict().items():
        assert torch.equal(model.state_dict()[f"backbone.{key}"], value), key


def test_create_model_refuses_another_variant(tmp_path):
    small = factory.write_official_in1k(tmp_path / "s.pth", factory.mmseg_state("s", backbone_only=True))
    with pytest.raises(BadInputError, match=r"SegNeXt-S weights \(backbone\); create_model was asked for SegNeXt-T"):
        segnext_hub.create_model("t", num_classes=3, pretrained_backbone=small)
    seg = factory.write_mmseg(tmp_path / "s_seg.pth", factory.mmseg_state("s", md_r=16), md_r=16)
    with pytest.raises(BadInputError, match=r"SegNeXt-S weights \(segmentor\)"):
        segnext_hub.create_model("t", num_classes=3, pretrained_backbone=seg)


def test_create_model_initialises_as_mmseg(one_torch_thread):
    torch.manual_seed(0)
    model = segnext_hub.create_model("t", num_classes=19)
    config = model.segnext_config
    assert config.pretrained_backbone is None and len(config.new_weights) == len(model.state_dict())
    conv = model.backbone.block1[0].attn.proj_1  # 1x1, 32 -> 32: fan_out 32, std sqrt(2/32)
    assert abs(conv.weight.std().item() / (2 / 32) ** 0.5 - 1) < 0.15 and not conv.bias.any()
    squeeze = model.decode_head.squeeze.conv  # Kaiming normal, fan_out = 256
    assert abs(squeeze.weight.std().item() / (2 / 256) ** 0.5 - 1) < 0.05
    assert torch.equal(model.decode_head.squeeze.gn.weight, torch.ones(256))
    assert 0.0085 < model.decode_head.conv_seg.weight.std().item() < 0.0115


def test_a_loaded_model_trains_like_a_built_one(t_file, t_state, one_torch_thread):
    """load() stamps models out of a meta skeleton; in training they must be the module
    create_model builds (drop path rates, dropout, NMF steps), draw for draw."""
    built = segnext_hub.create_model("t", num_classes=150, md_r=16)
    built.load_state_dict(t_state)
    results = []
    for model in (segnext_hub.load(t_file), built):
        model.train()
        torch.manual_seed(11)
        loss = model.loss(torch.ones(2, 3, 32, 32), torch.zeros(2, 32, 32, dtype=torch.long))
        loss.backward()
        results.append((loss.detach(), model.backbone.block4[1].mlp.fc1.weight.grad.clone(), torch.rand(3)))
    assert all(torch.equal(a, b) for a, b in zip(*results))
