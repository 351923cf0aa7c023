"""Shape, key-set, dtype/device and determinism behaviour of the reference model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from segnext_hub import create_model
from segnext_hub.models import MSCAN, get_variant
from segnext_hub.models.random_init import randomize_

KEY_COUNTS = {"t": 550, "s": 436, "b": 854, "l": 1500}
PARAMS = {"t": 4_263_414, "s": 13_932_886, "b": 27_636_310, "l": 48_926_550}


@pytest.fixture(scope="module")
def tiny():
    return randomize_(create_model("t"), seed=0)


@pytest.mark.parametrize("variant", "tsbl")
def test_key_and_parameter_counts_match_mmseg(variant):
    model = create_model(variant)
    assert len(model.state_dict()) == KEY_COUNTS[variant]
    assert sum(p.numel() for p in model.parameters()) == PARAMS[variant]


@pytest.mark.parametrize("name", ["t", "T", "mscan-t", "segnext_t", "tiny"])
def test_variant_aliases(name):
    assert get_variant(name).embed_dims == (32, 64, 160, 256)


def test_backbone_only_has_unprefixed_keys():
    backbone = create_model("mscan-s", backbone_only=True)
    assert isinstance(backbone, MSCAN)
    keys = set(backbone.state_dict())
    assert "patch_embed1.proj.0.weight" in keys and "block3.3.mlp.dwconv.weight" in keys
    assert not any(k.startswith(("backbone.", "decode_head.")) for k in keys)
    full = create_model("s").state_dict()
    assert {f"backbone.{k}" for k in keys} == {k for k in full if k.startswith("backbone.")}


def test_segmentor_key_names():
    keys = set(create_model("t").state_dict())
    for key in ["backbone.patch_embed1.proj.4.running_var", "backbone.block1.0.layer_scale_1",
                "backbone.block2.1.attn.spatial_gating_unit.conv2_2.weight", "backbone.norm4.bias",
                "decode_head.squeeze.conv.weight", "decode_head.squeeze.gn.weight",
                "decode_head.hamburger.ham_in.conv.bias", "decode_head.hamburger.ham_out.gn.bias",
                "decode_head.align.conv.weight", "decode_head.conv_seg.weight"]:
        assert key in keys, key
    assert "decode_head.hamburger.ham_out.conv.bias" not in keys


def test_md_r_default_and_override():
    assert create_model("b").decode_head.md_r == 64
    assert create_model("b", md_r=16).decode_head.md_r == 16
    assert create_model("t").decode_head.md_r == 16


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 75, 103)])
def test_forward_shapes(tiny, shape):
    with torch.no_grad():
        feats = tiny.backbone(torch.randn(shape))
        logits = tiny(torch.randn(shape))
    h, w = shape[2:]
    expected = [(-(-h // s), -(-w // s)) for s in (4, 8, 16, 32)]
    assert [tuple(f.shape[2:]) for f in feats] == expected
    assert [f.shape[1] for f in feats] == [32, 64, 160, 256]
    assert logits.shape == (shape[0], 150) + expected[1]


def test_num_classes_changes_only_the_classifier():
    a, b = create_model("t", num_classes=19).state_dict(), create_model("t").state_dict()
    assert a["decode_head.conv_seg.weight"].shape == (19, 256, 1, 1)
    assert set(a) == set(b)


def test_global_seed_reproduces_and_differs(tiny):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.manual_seed(3); y1 = tiny(x)
        torch.manual_seed(3); y2 = tiny(x)
        torch.manual_seed(4); y3 = tiny(x)
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, y3)


def test_generator_is_deterministic_and_leaves_global_rng_alone(tiny):
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    with torch.no_grad():
        y1 = tiny(x, generator=torch.Generator().manual_seed(11))
        y2 = tiny(x, generator=torch.Generator().manual_seed(11))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(y1, y2)
    # A CPU generator seeded like the global RNG consumes it the same way.
    with torch.no_grad():
        torch.manual_seed(11)
        y3 = tiny(x)
    assert torch.equal(y1, y3)


def test_per_model_generator(tiny):
    x = torch.randn(1, 3, 64, 64)
    try:
        tiny.set_generator(torch.Generator().manual_seed(5))
        with torch.no_grad():
            y1 = tiny(x)
        tiny.set_generator(torch.Generator().manual_seed(5))
        with torch.no_grad():
            y2 = tiny(x)
    finally:
        tiny.set_generator(None)
    assert torch.equal(y1, y2)


def test_dtype_and_device_moves(tiny):
    model = create_model("t").double()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64, dtype=torch.float64))
    assert out.dtype == torch.float64
    if torch.cuda.is_available():  # pragma: no cover - exercised on GPU machines only
        cuda = create_model("t").cuda()
        assert cuda(torch.randn(1, 3, 64, 64, device="cuda")).device.type == "cuda"


@pytest.mark.parametrize("bad", ["x", "mscan-xl", "", 3])
def test_wrong_variant_is_a_clear_value_error(bad):
    with pytest.raises(ValueError, match="variant"):
        create_model(bad)


@pytest.mark.parametrize("kwargs", [{"md_r": 0}, {"num_classes": 0}, {"num_classes": 2.5}])
def test_bad_hyper_parameters(kwargs):
    with pytest.raises(ValueError):
        create_model("t", **kwargs)


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (1, 4, 64, 64), (3, 64, 64)])
def test_non_rgb_input_is_a_clear_value_error(tiny, shape):
    with pytest.raises(ValueError, match="3, H, W"):
        tiny(torch.randn(shape))


def test_predict_whole_returns_full_size_maps(tiny):
    image = np.random.default_rng(0).integers(0, 256, (75, 103, 3), dtype=np.uint8)
    torch.manual_seed(0)
    (pred,) = tiny.predict(image, return_logits=True)
    assert pred.mask.shape == (75, 103) and pred.mask.dtype == torch.int64
    assert pred.logits.shape == (150, 75, 103)
    assert torch.equal(pred.logits.argmax(0), pred.mask)


def test_predict_accepts_tensors_and_lists(tiny):
    image = torch.randint(0, 256, (40, 50, 3), dtype=torch.uint8)
    preds = tiny.predict([image, image.numpy()], generator=torch.Generator().manual_seed(0))
    assert len(preds) == 2 and preds[0].mask.shape == (40, 50)


def test_predict_takes_a_read_only_array_without_warning(tiny):
    """``np.asarray(Image.open(...))`` is read-only; README's recipe passes one as is."""
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    image.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (pred,) = tiny.predict(image, generator=torch.Generator().manual_seed(0))
    (same,) = tiny.predict(image.copy(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(pred.mask, same.mask) and not image.flags.writeable


def test_predict_slide_covers_the_image(tiny):
    image = np.random.default_rng(1).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    (pred,) = tiny.predict(image, mode="slide", scale=None, crop_size=(64, 64), stride=(48, 48),
                           generator=torch.Generator().manual_seed(0), return_logits=True)
    assert pred.mask.shape == (100, 150)
    assert torch.isfinite(pred.logits).all()


def test_predict_slide_with_one_tile_equals_whole(tiny):
    image = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = tiny.predict(image, scale=None, generator=torch.Generator().manual_seed(0), return_logits=True)[0]
    slide = tiny.predict(image, mode="slide", scale=None, crop_size=(64, 64), stride=(48, 48),
                         generator=torch.Generator().manual_seed(0), return_logits=True)[0]
    assert torch.equal(whole.logits, slide.logits)


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8)])
def test_predict_rejects_non_rgb(tiny, bad):
    with pytest.raises(ValueError, match="H, W, 3"):
        tiny.predict(bad)


def test_predict_rejects_unknown_mode(tiny):
    with pytest.raises(ValueError, match="mode"):
        tiny.predict(np.zeros((8, 8, 3), np.uint8), mode="tiles")


def test_keep_ratio_resize_matches_mmcv_rule():
    from segnext_hub.models.preprocessing import keep_ratio_resize as _keep_ratio_resize
    img = torch.zeros(3, 375, 500)
    assert tuple(_keep_ratio_resize(img, (2048, 512)).shape) == (3, 512, 683)
    assert _keep_ratio_resize(torch.zeros(3, 512, 512), (2048, 512)).shape == (3, 512, 512)


def test_opencv_compatible_resize_values():
    from segnext_hub.models.preprocessing import resize_like_opencv
    flat = torch.full((3, 7, 9), 200)
    assert torch.equal(resize_like_opencv(flat, 13, 5), torch.full((3, 13, 5), 200.0))
    ramp = torch.arange(4).repeat(1, 1, 1).expand(1, 1, 4) * 10  # 0,10,20,30
    up = resize_like_opencv(ramp.reshape(1, 1, 4), 1, 8)
    # Half-pixel centres: 0, 0, 2.5->3?, ... values stay monotone and within range.
    assert up[0, 0, 0] == 0 and up[0, 0, -1] == 30
    assert torch.all(up[0, 0, 1:] >= up[0, 0, :-1])


def test_train_mode_runs_drop_path_and_train_steps():
    model = create_model("t")
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    out.mean().backward()
    assert model.backbone.patch_embed1.proj[0].weight.grad is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("variant", "tsbl")
def test_cuda_fp32_matches_cpu(variant):  # pragma: no cover - runs on GPU machines only
    cpu = randomize_(create_model(variant), seed=1)
    gpu = randomize_(create_model(variant), seed=1).cuda()
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.randn(1, 3, 96, 128)
    bases = torch.nn.functional.normalize(torch.rand(1, cpu.decode_head.hamburger.ham_in.conv.out_channels,
                                                     cpu.decode_head.md_r), dim=1)
    with torch.no_grad():
        ref = cpu(x, bases=bases)
        out = gpu(x.cuda(), bases=bases.cuda()).cpu()
    assert (out - ref).abs().max().item() <= 1e-3
    assert (out.argmax(1) == ref.argmax(1)).float().mean().item() >= 0.999
