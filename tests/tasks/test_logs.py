"""Training-log parsing on generated mmcv 1.x and MMEngine JSON-lines logs."""

from __future__ import annotations

import json

import pytest

from segnext_hub.errors import BadInputError
from segnext_hub.tasks.logs import format_summary, parse_log, parse_log_lines, plot_log

CONFIG_TEXT = """norm_cfg = dict(type='SyncBN', requires_grad=True)
ham_norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    type='EncoderDecoder',
    decode_head=dict(
        type='LightHamHead',
        in_channels=[128, 320, 512],
        channels=512,
        ham_channels=512,
        ham_kwargs=dict(MD_S=1, MD_R={md_r}, train_steps=6, eval_steps=7),
        num_classes=150))
"""
# (iteration, mIoU %) for the validation runs; the best is not the last.
VALS = [(8000, 30.1), (16000, 38.7), (24000, 42.35), (32000, 41.9)]


def mmcv_lines(seed=1234, md_r=64, fractions=True):
    """What mmcv 1.x's TextLoggerHook writes for MMSeg 0.x: meta line, then records."""
    scale = 0.01 if fractions else 1.0
    lines = [json.dumps({
        "env_info": "sys.platform: linux\nPython: 3.8\nCUDA available: True",
        "seed": seed, "exp_name": "segnext.base.512x512.ade.160k.py",
        "mmseg_version": "0.24.1", "config": CONFIG_TEXT.format(md_r=md_r),
    })]
    for it in range(50, 32001, 50):
        lines.append(json.dumps({
            "mode": "train", "epoch": 1, "iter": it, "lr": 6e-5, "memory": 9000,
            "data_time": 0.01, "decode.loss_ce": 3.0 - it / 16000, "decode.acc_seg": 80.0,
            "loss": 3.0 - it / 16000, "time": 0.4,
        }))
        for val_it, miou in VALS:
            if it == val_it:
                lines.append(json.dumps({
                    "mode": "val", "epoch": 1, "iter": it, "lr": 6e-5,
                    "aAcc": 80.5 * scale, "mIoU": miou * scale, "mAcc": 52.25 * scale,
                    "IoU.wall": 0.7, "Acc.wall": 0.8,
                }))
    return lines


def mmengine_lines():
    """MMEngine's scalars.json: `step` on every record, percentages, no seed line."""
    lines = []
    for it in range(50, 32001, 50):
        lines.append(json.dumps({
            "lr": 6e-5, "data_time": 0.01, "loss": 2.0 - it / 32000, "decode.loss_ce": 2.0 - it / 32000,
            "decode.acc_seg": 80.0, "time": 0.4, "iter": it, "memory": 9000, "step": it,
        }))
        for val_it, miou in VALS:
            if it == val_it:
                lines.append(json.dumps({
                    "aAcc": 80.5, "mIoU": miou, "mAcc": 52.25, "data_time": 0.01, "time": 0.1,
                    "step": it,
                }))
    return lines


def write(tmp_path, lines, name="run.log.json"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_mmcv_log_summary(tmp_path):
    summary = parse_log(write(tmp_path, mmcv_lines(seed=1234, md_r=64)))
    assert summary.format == "mmcv"
    assert summary.metric_scale == "fraction"
    assert summary.best_miou == pytest.approx(42.35) and summary.best_miou_iter == 24000
    assert summary.final_miou == pytest.approx(41.9) and summary.final_miou_iter == 32000
    assert summary.final_aacc == pytest.approx(80.5) and summary.final_macc == pytest.approx(52.25)
    assert summary.num_iters == 32000
    assert (summary.seed, summary.md_r) == (1234, 64)
    assert summary.skipped_lines == 0 and summary.num_lines == 1 + 640 + 4
    assert len(summary.loss_curve) == 640 and summary.loss_curve[0] == (50, pytest.approx(3.0 - 50 / 16000))
    assert [it for it, _ in summary.miou_curve] == [it for it, _ in VALS]


def test_mmcv_log_with_percentages_is_not_rescaled(tmp_path):
    summary = parse_log(write(tmp_path, mmcv_lines(fractions=False, md_r=16)))
    assert summary.metric_scale == "percent"
    assert summary.best_miou == pytest.approx(42.35) and summary.md_r == 16


def test_mmengine_scalar_log_summary(tmp_path):
    summary = parse_log(write(tmp_path, mmengine_lines(), "scalars.json"))
    assert summary.format == "mmengine"
    assert summary.metric_scale == "percent"
    assert summary.best_miou == pytest.approx(42.35) and summary.best_miou_iter == 24000
    assert summary.final_miou == pytest.approx(41.9) and summary.final_aacc == pytest.approx(80.5)
    assert summary.num_iters == 32000
    assert summary.seed is None and summary.md_r is None
    assert len(summary.loss_curve) == 640 and summary.warnings == ()


def test_md_r_found_in_a_dumped_dict_config():
    meta = json.dumps({"seed": 7, "config": {"model": {"decode_head": {"ham_kwargs": {"MD_R": 16}}}}})
    summary = parse_log_lines([meta, json.dumps({"mode": "train", "iter": 50, "loss": 1.0})])
    assert (summary.seed, summary.md_r) == (7, 16)


def test_malformed_lines_are_skipped_and_counted(tmp_path):
    lines = mmcv_lines()
    lines.insert(3, '{"mode": "train", "iter": 150, "lo')  # truncated write
    lines.insert(10, "[1, 2, 3]")  # JSON but not a record
    lines.insert(20, '{"mode": "train", "iter": "many", "loss": 1.0}')  # iteration not a number
    lines.insert(30, "")  # blank lines are not counted at all
    lines.append("\x00\x00garbage")
    summary = parse_log(write(tmp_path, lines))
    assert summary.skipped_lines == 4
    assert summary.num_lines == 1 + 640 + 4 + 4
    assert summary.best_miou == pytest.approx(42.35) and summary.seed == 1234
    assert any("4 of" in w for w in summary.warnings)
    assert "4 skipped" in format_summary(summary)


def test_empty_log_is_a_clear_error(tmp_path):
    path = write(tmp_path, ["", "   "])
    with pytest.raises(BadInputError, match="is empty") as info:
        parse_log(path)
    assert str(path) in str(info.value)


def test_log_without_any_record_is_a_clear_error(tmp_path):
    with pytest.raises(BadInputError, match=r"no training-log records \(2 lines, 2 malformed\)"):
        parse_log(write(tmp_path, ["not json", "{broken"]))


def test_missing_log_file(tmp_path):
    with pytest.raises(BadInputError, match="cannot read training log"):
        parse_log(tmp_path / "absent.log.json")


def test_summary_text_and_dict():
    summary = parse_log_lines(mmengine_lines())
    text = format_summary(summary)
    assert "best mIoU     42.35% (iter 24000)" in text and "not recorded" in text
    data = summary.as_dict()
    assert "loss_curve" not in data and data["best_miou_iter"] == 24000
    assert json.loads(json.dumps(summary.as_dict(curves=True)))["miou_curve"][0] == [8000, 30.1]


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = plot_log(parse_log_lines(mmcv_lines()), tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(BadInputError, match=r"pip install 'segnext-hub\[plot\]'"):
        plot_log(parse_log_lines(mmengine_lines()), tmp_path / "x.png")
