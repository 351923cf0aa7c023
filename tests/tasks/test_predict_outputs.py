"""What ``predict`` writes (issue 19, findings 7 and 8): a distinct set of files for every
input, nothing for an image that failed, never a folder holding only legend.json, and
``--skip-bad`` going on past bad images with a summary.

Evidence: a real (random-weight) SegNeXt-T, real image files written with Pillow, the CLI
through click's runner; the mirror fixture serves generated weights on 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from segnext_hub.cli.hub import main as hub_cli
from segnext_hub.errors import BadInputError
from segnext_hub.models import build_model
from segnext_hub.tasks.inference import output_stems, predict_files
from tests.helpers.images import png_header_only


@pytest.fixture(scope="module")
def model():
    return build_model("t", num_classes=150, md_r=16).eval()


def picture(path: Path, seed: int = 0, size=(40, 56)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_output_stems_are_distinct_for_every_input():
    paths = [Path("a/twin.jpg"), Path("a/twin.png"), Path("b/twin.jpg"), Path("a/solo.png"), Path("a/SOLO.jpg"),
             Path("a/twin_jpg.png")]
    stems = output_stems(paths)
    assert len({s.casefold() for s in stems}) == len(paths)
    assert stems[0:3] == ["a_twin_jpg", "twin_png", "b_twin_jpg"]
    assert output_stems([Path("x/one.png")]) == ["one"]


def test_twins_with_different_extensions_get_their_own_outputs(model, tmp_path):
    jpg = picture(tmp_path / "in" / "twin.jpg", seed=1)
    png = picture(tmp_path / "in" / "twin.png", seed=2)
    out = tmp_path / "out"
    written = predict_files(model, [jpg, png], out, progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["legend.json"] + sorted(f"twin_{ext}_{kind}.png" for ext in ("jpg", "png")
                                             for kind in ("classes", "color", "overlay"))
    assert written[0]["color"] != written[1]["color"]


def test_a_failed_run_leaves_no_folder_with_only_the_legend(model, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    good = picture(tmp_path / "good.png")
    out = tmp_path / "out"
    with pytest.raises(BadInputError, match="cannot read image"):
        predict_files(model, [good, bad], out, progress=False)
    assert not out.exists()  # every header is checked before the first output


def test_an_image_that_fails_while_decoding_leaves_nothing_of_its_own(model, tmp_path):
    good = picture(tmp_path / "good.png")
    data = good.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])  # a valid header, a truncated body
    out = tmp_path / "out"
    with pytest.raises(BadInputError):
        predict_files(model, [cut], out, progress=False)
    assert not out.exists()
    with pytest.raises(BadInputError):
        predict_files(model, [good, cut], out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["good_classes.png", "good_color.png", "good_overlay.png",
                                                     "legend.json"]


def test_skip_bad_goes_on_and_reports(model, tmp_path):
    good = picture(tmp_path / "good.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:200])
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(9000, 9000))
    skipped: list = []
    written = predict_files(model, [cut, good, bomb], tmp_path / "out", progress=False, skipped=skipped)
    assert [w["color"].name for w in written] == ["good_color.png"]
    assert [p.name for p, _ in skipped] == ["bomb.png", "cut.png"]  # headers first, then the decode
    assert "over the 50 MP limit" in skipped[0][1]


def cli(*args):
    result = CliRunner().invoke(hub_cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_pixel_limit_skip_bad_and_summary(mirror, tmp_path):
    mirror.serve("mscan-t")
    assert cli("pull", "-q", "mscan-t")[0] == 0
    big = picture(tmp_path / "big.png", size=(300, 400))  # 0.12 MP
    good = picture(tmp_path / "good.png")
    code, out, err = cli("predict", "mscan-t", big, good, "-o", tmp_path / "o", "-q", "--max-megapixels", "0.1")
    assert code == 2 and "over the 0.1 MP limit" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()

    code, out, err = cli("predict", "mscan-t", big, good, "-o", tmp_path / "o", "-q", "--max-megapixels", "0.1",
                         "--skip-bad")
    assert code == 0, err
    assert out.split() == [str(tmp_path / "o" / "good_color.png")]
    assert err.splitlines()[0] == "skipped 1 of 2 images:" and "big.png" in err.splitlines()[1]

    code, out, err = cli("predict", "mscan-t", big, "-o", tmp_path / "none", "-q", "--max-megapixels", "0.1",
                         "--skip-bad")
    assert code == 2 and "none of the 1 images could be read; nothing written" in err
    assert not (tmp_path / "none").exists()
