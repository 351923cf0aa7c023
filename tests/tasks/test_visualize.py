"""Palettes (against MMSeg's dataset classes where available), colour masks, overlays, PNGs."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segnext_hub import datasets as palettes
from segnext_hub.errors import BadInputError
from segnext_hub.tasks.visualize import colorize, overlay, save_outputs

MMSEG_DATASETS = Path(__file__).resolve().parents[2] / ".venv-parity/lib/python3.11/site-packages/mmseg/datasets"


def test_dataset_facts():
    counts = {name: palettes.get_dataset(name).num_classes for name in palettes.dataset_names()}
    assert counts == {"ade20k": 150, "cityscapes": 19, "coco_stuff164k": 171, "isaid": 16}
    assert palettes.get_classes("ADE20K")[:3] == ("wall", "building", "sky")
    assert palettes.get_classes("ade")[7] == "bed"  # MMSeg's 'bed ' without the stray space
    assert palettes.get_palette("cityscapes")[0].tolist() == [128, 64, 128]
    assert palettes.get_classes("coco-stuff")[-1] == "wood" and palettes.get_dataset("iSAID").classes[0] == "background"
    assert palettes.get_dataset("ade20k").reduce_zero_label and not palettes.get_dataset("cityscapes").reduce_zero_label
    with pytest.raises(BadInputError, match="unknown dataset"):
        palettes.get_dataset("pascal_voc")


@pytest.mark.skipif(not MMSEG_DATASETS.is_dir(), reason="MMSegmentation sources not installed")
@pytest.mark.parametrize("name,fname,cls", [("ade20k", "ade.py", "ADE20KDataset"),
                                            ("cityscapes", "cityscapes.py", "CityscapesDataset"),
                                            ("coco_stuff164k", "coco_stuff.py", "COCOStuffDataset"),
                                            ("isaid", "isaid.py", "iSAIDDataset")])
def test_data_file_matches_mmseg_source(name, fname, cls):
    tree = ast.parse((MMSEG_DATASETS / fname).read_text())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls)
    meta = next(s.value for s in node.body if isinstance(s, ast.Assign) and s.targets[0].id == "METAINFO")
    facts = {k.arg: ast.literal_eval(k.value) for k in meta.keywords}
    info = palettes.get_dataset(name)
    assert info.classes == tuple(c.strip() for c in facts["classes"])
    assert [list(c) for c in info.palette] == facts["palette"]


def test_palette_for_model_outputs():
    assert palettes.palette_for(19).tolist() == palettes.get_palette("cityscapes").tolist()
    other = palettes.palette_for(7)
    assert other.shape == (7, 3) and other.dtype == np.uint8
    assert np.array_equal(other, palettes.palette_for(7))  # deterministic
    with pytest.raises(BadInputError, match="150 classes"):
        palettes.palette_for(19, "ade20k")


def test_colorize_maps_indices_and_blacks_out_the_rest():
    pal = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]], dtype=np.uint8)
    mask = np.array([[0, 1], [2, 255]])
    out = colorize(mask, pal)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [10, 20, 30] and out[1, 0].tolist() == [70, 80, 90]
    assert out[1, 1].tolist() == [0, 0, 0]
    assert np.array_equal(colorize(torch.tensor(mask), pal), out)
    with pytest.raises(BadInputError):
        colorize(np.zeros((2, 2, 1), dtype=np.int64), pal)
    with pytest.raises(BadInputError):
        colorize(np.zeros((2, 2), dtype=np.float32), pal)
    with pytest.raises(BadInputError):
        colorize(mask, np.zeros((3, 4)))


def test_overlay_blends():
    img = np.full((2, 3, 3), 100, dtype=np.uint8)
    col = np.full((2, 3, 3), 201, dtype=np.uint8)
    assert np.array_equal(overlay(img, col, 0.0), img)
    assert np.array_equal(overlay(img, col, 1.0), col)
    assert overlay(img, col, 0.5)[0, 0].tolist() == [150, 150, 150]  # 150.5 rounds to even
    with pytest.raises(BadInputError):
        overlay(img, col[:1])
    with pytest.raises(BadInputError):
        overlay(img, col, 1.5)


def test_save_outputs_writes_three_pngs(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    mask = rng.integers(0, 150, (9, 11))
    pal = palettes.get_palette("ade20k")
    paths = save_outputs(image, torch.from_numpy(mask), pal, tmp_path, "photo")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo_classes.png", "photo_color.png", "photo_overlay.png"]
    classes = Image.open(paths["classes"])
    assert classes.mode == "L" and np.array_equal(np.array(classes), mask)
    assert np.array_equal(np.array(Image.open(paths["color"])), pal[mask])
    assert np.array_equal(np.array(Image.open(paths["overlay"])), overlay(image, pal[mask]))
    # Overwrites in place, leaving no temporary files behind.
    save_outputs(image, np.zeros_like(mask), pal, tmp_path, "photo")
    assert len(list(tmp_path.iterdir())) == 3 and not np.array(Image.open(paths["classes"])).any()


def test_many_classes_use_16_bit_pngs(tmp_path):
    pal = palettes.random_palette(300)
    mask = np.array([[0, 299], [256, 7]])
    paths = save_outputs(np.zeros((2, 2, 3), np.uint8), mask, pal, tmp_path, "x")
    back = np.array(Image.open(paths["classes"]))
    assert back.dtype in (np.uint16, np.int32) and back.tolist() == mask.tolist()


def test_save_outputs_rejects_bad_input(tmp_path):
    pal = palettes.get_palette("cityscapes")
    blocker = tmp_path.parent / f"{tmp_path.name}-a-file"
    blocker.write_text("x")
    with pytest.raises(BadInputError, match="exists and is not a folder"):
        save_outputs(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), int), pal, blocker, "x")
    with pytest.raises(BadInputError, match="does not match"):
        save_outputs(np.zeros((3, 2, 3), np.uint8), np.zeros((2, 2), int), pal, tmp_path, "x")
    with pytest.raises(BadInputError, match="fit"):
        save_outputs(np.zeros((2, 2, 3), np.uint8), np.full((2, 2), 300), pal, tmp_path, "x")
    assert not list(tmp_path.iterdir())


def test_save_outputs_creates_its_folder(tmp_path):
    """Issue 20: save_outputs needed an existing folder; now it makes it (with parents)."""
    pal = palettes.get_palette("cityscapes")
    paths = save_outputs(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), int), pal, tmp_path / "new" / "deep", "x")
    assert paths["color"] == tmp_path / "new" / "deep" / "x_color.png" and paths["color"].is_file()
