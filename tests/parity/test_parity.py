"""segnext_hub's model against the real MMSegmentation 1.2.2, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segnext_hub import create_model
from segnext_hub.models.random_init import randomize_
from tests.parity.harness import require_parity_env, run_mmseg

pytestmark = pytest.mark.parity

SEED = 1234
# Several sizes, two not multiples of 32, and a batch of 2.
SHAPES = [(1, 3, 64, 64), (1, 3, 75, 103), (2, 3, 96, 128), (1, 3, 129, 67)]


def _inputs(shapes):
    gen = torch.Generator().manual_seed(7)
    return [torch.randn(s, generator=gen) * 1.5 for s in shapes]


@pytest.mark.parametrize("variant", ["t", "s", "b", "l"])
def test_forward_matches_mmseg_bit_for_bit(variant, tmp_path):
    require_parity_env()
    md_r = {"t": 16, "s": 16, "b": 64, "l": 16}[variant]  # both ranks exercised
    model = randomize_(create_model(variant, md_r=md_r), seed=hash(variant) % 1000)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    shapes = SHAPES if variant != "l" else SHAPES[1:3]
    inputs = _inputs(shapes)
    torch.save(inputs, tmp_path / "inputs.pt")

    theirs = run_mmseg({"variant": variant, "md_r": md_r, "weights": str(tmp_path / "weights.pt"),
                        "inputs": str(tmp_path / "inputs.pt"), "seed": SEED}, tmp_path)["forward"]

    with torch.no_grad():
        for x, ref in zip(inputs, theirs):
            feats = model.backbone(x)
            torch.manual_seed(SEED)
            logits = model(x)
            assert logits.shape == ref["logits"].shape
            for ours, expected in zip(feats, ref["features"]):
                assert torch.equal(ours, expected), (variant, x.shape, (ours - expected).abs().max())
            diff = (logits - ref["logits"]).abs().max().item()
            assert diff == 0.0, f"{variant} {tuple(x.shape)}: logits differ by {diff}"


def test_state_dict_keys_shapes_dtypes_match_mmseg(tmp_path):
    require_parity_env()
    for variant in "tsbl":
        theirs = run_mmseg({"variant": variant, "md_r": 16, "keys": True}, tmp_path)["keys"]
        ours = {k: (tuple(v.shape), str(v.dtype)) for k, v in create_model(variant).state_dict().items()}
        assert ours == theirs, variant


def _images():
    rng = np.random.default_rng(3)
    # Smooth-ish images so that resizing behaves as on photographs.
    def smooth(h, w):
        base = rng.integers(0, 256, size=(h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
        t = torch.from_numpy(base).permute(2, 0, 1)[None]
        up = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
        return up[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    return smooth(512, 512), smooth(375, 500)


def test_predict_whole_matches_mmseg_inference(tmp_path):
    require_parity_env()
    model = randomize_(create_model("t", md_r=16), seed=5)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    same_size, resized = _images()
    paths = []
    for i, img in enumerate((same_size, resized)):
        paths.append(str(tmp_path / f"img{i}.npy"))
        np.save(paths[-1], img)
    theirs = run_mmseg({"variant": "t", "md_r": 16, "weights": str(tmp_path / "weights.pt"),
                        "predict_images": paths, "seed": SEED}, tmp_path)["predict"]

    ours = []
    for img in (same_size, resized):
        torch.manual_seed(SEED)
        ours.append(model.predict(img)[0].mask)
    assert ours[0].shape == theirs[0].shape == (512, 512)
    assert torch.equal(ours[0], theirs[0].long())
    assert ours[1].shape == theirs[1].shape == (375, 500)
    agreement = (ours[1] == theirs[1].long()).float().mean().item()
    print(f"predict after resize: {agreement:.4%} of pixels agree with MMSeg")
    assert agreement >= 0.995, f"only {agreement:.4%} of pixels agree after resizing"


def test_converted_pth_loads_in_mmseg_init_model(tmp_path):
    """segnext-convert's .pth output is an MMSeg checkpoint: init_model reads it as is."""
    require_parity_env()
    from segnext_hub.conversion.converter import convert
    from tests.helpers import factory

    state = factory.mmseg_state("t", seed=9, md_r=16)
    src = factory.write_official(tmp_path / "official.pth", state, md_r=16)
    convert(src, tmp_path / "mmseg.pth")
    x = torch.randn(1, 3, 75, 103)
    torch.save(x, tmp_path / "x.pt")
    theirs = run_mmseg({"variant": "t", "md_r": 16, "seed": SEED,
                        "init_model": {"checkpoint": str(tmp_path / "mmseg.pth"), "repeats": 1,
                                       "input": str(tmp_path / "x.pt")}}, tmp_path)
    assert len(theirs["dataset_meta"]["classes"]) == 150 and theirs["dataset_meta"]["classes"][0] == "wall"
    model = create_model("t", md_r=16)
    model.load_state_dict(state, strict=True)
    torch.manual_seed(SEED)
    with torch.no_grad():
        assert torch.equal(model(x), theirs["logits"])
