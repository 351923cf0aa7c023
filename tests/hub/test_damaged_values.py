"""Values that drive work are bounded, and a bad one is a typed, one-line error with its repair.

Evidence: a real pull over the loopback mirror, then config.json (and its manifest record,
so the entry stays consistent, as a group member of a shared cache could make it) edited
to carry the value; safetensors files written by the real ``safetensors`` library; the
real CLI. Before: md_r 10^6 asked for gigabytes at predict, ``KeyError: 'variant'``
reached the CLI, a stride of 1 never ended and a 0 one raised ZeroDivisionError.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.torch import save_file

import segnext_hub
from segnext_hub.cli.hub import main as hub_cli
from segnext_hub.errors import BadInputError, DamagedEntryError
from segnext_hub.models import predict as predict_module


def cli(*args: str):
    result = CliRunner().invoke(hub_cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def _edit_config(folder, change) -> None:
    """Rewrite config.json and its manifest record (size + sha256) consistently."""
    config = json.loads((folder / "config.json").read_text())
    change(config)
    data = json.dumps(config).encode()
    (folder / "config.json").chmod(0o644)
    (folder / "config.json").write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["config.json"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "manifest.json").chmod(0o644)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("change, words", [
    (lambda c: c.update(md_r=10**6), "md_r 1000000 must be an integer in 1..1024"),
    (lambda c: c.update(md_r=300), "md_r 300 is more than the head's 256 channels"),
    (lambda c: c.pop("variant"), "names no variant"),
    (lambda c: c.update(num_classes="x"), "num_classes 'x' must be an integer"),
    (lambda c: c.update(test_stride=[1, 1]), "test_stride [1, 1] must be two integers in 32..8192"),
    (lambda c: c.update(resize_scale=[100000, 100000]), "resize_scale [100000, 100000] must be two integers"),
    (lambda c: c.update(palette=[[0, 0, 256]] * 150), "palette"),
])
def test_a_bad_value_in_a_cache_entry_is_damage_with_its_repair(mirror, tmp_path, change, words):
    mirror.serve("mscan-t")
    folder = segnext_hub.pull("mscan-t", progress=False).path
    _edit_config(folder, change)
    with pytest.raises(DamagedEntryError) as err:
        segnext_hub.load("mscan-t")
    message = str(err.value)
    assert words in message and "config.json" in message and "\n" not in message, message
    assert message.endswith("repair it with: segnext-hub pull --force mscan-t")
    (tmp_path / "x.png").write_bytes(b"")
    code, out, err_text = cli("predict", "mscan-t", str(tmp_path / "x.png"), "-o", str(tmp_path / "out"))
    assert code == 1 and err_text.count("\n") == 1 and words in err_text and "Error:" not in err_text, err_text
    code, out, _ = cli("info", "mscan-t")
    assert code == 0 and "DAMAGED" in out and words in out, out
    assert cli("pull", "-q", "--force", "mscan-t")[0] == 0
    segnext_hub.load("mscan-t")


def test_md_r_beyond_the_head_in_safetensors_metadata_names_the_field_and_file(tmp_path, mirror):
    mirror.serve("mscan-t")
    model = segnext_hub.load("mscan-t")
    meta = {**model.segnext_config.to_metadata(), "md_r": "300"}
    path = tmp_path / "wide.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    with pytest.raises(BadInputError, match=r"wide.safetensors metadata: md_r 300 is more than the head's 256 channels"):
        segnext_hub.load(path)
    with pytest.raises(BadInputError, match="md_r argument: md_r 300 is more than"):
        segnext_hub.load("mscan-t", md_r=300)
    with pytest.raises(BadInputError, match="md_r 2000 is more than the head's 512"):
        segnext_hub.create_model("b", md_r=2000)


@pytest.mark.parametrize("kwargs, words", [
    (dict(scale=(100_000, 100_000)), "scale (100000, 100000) must be two integers in 32..8192"),
    (dict(scale=(0, 0)), "scale (0, 0) must be two integers"),
    (dict(mode="slide", crop_size=(1, 1), stride=(1, 1)), "crop_size (1, 1) must be two integers"),
    (dict(mode="slide", stride=(0, 0)), "stride (0, 0) must be two integers in 8..8192"),
    (dict(mode="slide", stride=(1, 1)), "stride (1, 1) must be two integers in 8..8192"),
    (dict(mode="slide", scale=(1024, 1024), crop_size=(32, 32), stride=(8, 8)), "would run 13125 windows of .*at most 4096"),
])
def test_predict_refuses_sizes_outside_the_documented_range(kwargs, words):
    model = segnext_hub.create_model("t", num_classes=2)
    image = np.zeros((40, 48, 3), np.uint8)
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        model.predict(image, **kwargs)
    assert predict_module.MIN_SIDE == segnext_hub.config.MIN_SIDE and predict_module.MAX_SIDE == \
        segnext_hub.config.MAX_SIDE


def test_evaluate_and_its_cli_refuse_sizes_outside_the_documented_range(tmp_path):
    from segnext_hub.tasks.evaluate import evaluate

    model = segnext_hub.create_model("t", num_classes=150)
    for sub in ("images/validation", "annotations/validation"):
        (tmp_path / sub).mkdir(parents=True)
    with pytest.raises(BadInputError, match=r"stride must be two integers in 8..8192"):
        evaluate(model, tmp_path, dataset="ade20k", mode="slide", stride=(1, 1))
    code, _, err = cli("eval", "mscan-t", str(tmp_path), "--stride", "1", "1")
    assert code == 2 and "1 is not in the range 8<=x<=8192" in err, err


@pytest.mark.parametrize("md_r", [300, 10**6])
def test_md_r_beyond_the_head_in_a_checkpoints_config_text_is_bad_input(tmp_path, md_r):
    """A checkpoint whose meta config says MD_R=300 (or 10^6) for a T: load(path) and
    segnext-convert say so in one line naming the file and where the value was read
    (before: a bare ValueError, or a 16 GB allocation at predict)."""
    from segnext_hub.cli.convert import main as convert_cli
    from tests.helpers import factory

    state = factory.mmseg_state("t", seed=0, num_classes=150, md_r=16)
    path = tmp_path / "wide.pth"
    path.write_bytes(factory.to_bytes(factory.mmengine_checkpoint(state, variant="t", md_r=md_r, seed=1, classes=None,
                                                                  palette=None, num_classes=150)))
    words = f"md_r {md_r} is more than the head's 256 channels (read from checkpoint meta"
    with pytest.raises(BadInputError, match=r"wide.pth: " + words.replace("(", r"\(")):
        segnext_hub.load(path)
    result = CliRunner().invoke(convert_cli, [str(path), str(tmp_path / "out.safetensors")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
    assert not (tmp_path / "out.safetensors").exists()
