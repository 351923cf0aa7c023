"""``segnext_mscan_*`` in timm 1.0.x: features, classifier, pretrained tags and files.

Evidence: the real timm (1.0.31, in .venv-timm) builds and wraps the model; weights are files
in each published layout built by tests/helpers/factory.py (MMSeg backbone, official ImageNet
file with its classifier and DDP prefix, Jittor .pkl) and registry artifacts served by the
loopback mirror, compared with segnext-hub's own MSCAN on the same weights.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.timm.conftest import require_timm

require_timm()

import timm  # noqa: E402

import segnext_hub  # noqa: E402
import segnext_hub.timm  # noqa: E402,F401 - registers the models
from segnext_hub.errors import BadInputError  # noqa: E402
from segnext_hub.hub.cache import artifact_dir  # noqa: E402
from tests.helpers import factory  # noqa: E402


@pytest.fixture(scope="module")
def t_backbone() -> dict:
    return factory.mmseg_state("t", seed=5, backbone_only=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory, t_backbone) -> dict:
    folder = tmp_path_factory.mktemp("timm-weights")
    mmseg = folder / "mscan_t_mmseg.pth"
    torch.save({"meta": {}, "state_dict": t_backbone}, mmseg)
    return {"mmseg": mmseg, "official": factory.write_official_in1k(folder / "mscan_t.pth", t_backbone),
            "jittor": factory.write_jittor(folder / "mscan_t.pkl", t_backbone)}


def reference(path) -> torch.nn.Module:
    return segnext_hub.create_model("t", backbone_only=True, pretrained_backbone=path).eval()


@pytest.mark.parametrize("layout", ["mmseg", "official", "jittor"])
def test_features_only_equal_segnext_hubs_mscan_on_the_same_file(files, layout):
    model = timm.create_model("segnext_mscan_t", pretrained=True, features_only=True,
                              pretrained_cfg_overlay=dict(file=str(files[layout]))).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.feature_info.channels() == [32, 64, 160, 256]
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        got, want = model(x), reference(files[layout])(x)
    assert len(got) == 4
    for ours, theirs in zip(got, want):
        assert torch.equal(ours, theirs)


def test_out_indices_pick_stages_and_drop_the_rest(files):
    model = timm.create_model("segnext_mscan_t", pretrained=True, features_only=True, out_indices=(1, 2),
                              pretrained_cfg_overlay=dict(file=str(files["mmseg"]))).eval()
    assert model.feature_info.reduction() == [8, 16]
    assert not any(key.startswith(("model.block4", "model.head")) for key in model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got, want = model(x), reference(files["mmseg"])(x)
    assert [t.shape for t in got] == [want[1].shape, want[2].shape]
    assert torch.equal(got[0], want[1]) and torch.equal(got[1], want[2])


def test_classifier_comes_from_the_official_imagenet_file(files):
    model = timm.create_model("segnext_mscan_t", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(files["official"]))).eval()
    saved = torch.load(files["official"], weights_only=True)["state_dict"]
    assert torch.equal(model.head.weight, saved["module.head.weight"])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        last = reference(files["official"])(x)[-1]
        want = torch.nn.functional.linear(last.mean(dim=(2, 3)), saved["module.head.weight"],
                                          saved["module.head.bias"])
        assert torch.allclose(model(x), want, atol=1e-5)
        assert torch.equal(model.forward_features(x), last)


def test_a_backbone_without_classifier_or_other_classes_gets_a_new_head_with_a_warning(files):
    with pytest.warns(UserWarning, match="no ImageNet classifier.*newly initialised"):
        timm.create_model("segnext_mscan_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(files["mmseg"])))
    with pytest.warns(UserWarning, match="1000 classes.*10-class classifier head is newly"):
        model = timm.create_model("segnext_mscan_t", pretrained=True, num_classes=10,
                                  pretrained_cfg_overlay=dict(file=str(files["official"])))
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # features_only looks for no classifier
        timm.create_model("segnext_mscan_t", pretrained=True, features_only=True,
                          pretrained_cfg_overlay=dict(file=str(files["mmseg"])))


def test_loading_is_strict(tmp_path, t_backbone):
    extra = dict(t_backbone, **{"block1.0.extra.weight": torch.zeros(3)})
    torch.save({"state_dict": extra}, tmp_path / "extra.pth")
    missing = {k: v for k, v in t_backbone.items() if not k.startswith("block1.0.mlp.fc2")}
    torch.save({"state_dict": missing}, tmp_path / "missing.pth")
    for name in ("extra.pth", "missing.pth"):
        with pytest.raises(BadInputError, match="block1.0"):
            timm.create_model("segnext_mscan_t", pretrained=True, features_only=True,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / name)))
    torch.save({"state_dict": t_backbone}, tmp_path / "t.pth")
    with pytest.raises(BadInputError, match="SegNeXt-T"):
        timm.create_model("segnext_mscan_s", pretrained=True, features_only=True,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / "t.pth")))


def test_tags_pull_into_segnext_hubs_cache(mirror):
    assert {"segnext_mscan_t.in1k", "segnext_mscan_t.in1k_official", "segnext_mscan_t.in1k_jittor",
            "segnext_mscan_t.ade20k"} <= set(timm.list_models("segnext_mscan_t*", pretrained=True))
    mirror.serve("mscan-t-in1k-official")
    model = timm.create_model("segnext_mscan_t.in1k_official", pretrained=True).eval()
    assert (artifact_dir("mscan-t-in1k-official") / "model.safetensors").is_file()
    assert model.pretrained_cfg["file"] == "segnext-hub:mscan-t-in1k-official"
    assert torch.count_nonzero(model.head.weight) == 0  # the mirror's official file has a zero classifier
    cached = segnext_hub.load("mscan-t-in1k-official")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), cached(x)[-1])

    mirror.serve("mscan-t-in1k")
    with pytest.warns(UserWarning, match="no ImageNet classifier"):
        timm.create_model("segnext_mscan_t", pretrained=True)  # the default tag: MMSeg's .in1k
    assert mirror.gets(segnext_hub.hub.registry.get_artifact("mscan-t-in1k").url) == 1


def test_bad_arguments_say_so():
    with pytest.raises(ValueError, match="3 input channels"):
        timm.create_model("segnext_mscan_t", in_chans=1)
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model("segnext_mscan_t", global_pool="max")
