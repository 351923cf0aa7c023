"""Training-log parsing, first on real logs (tests/data/logs, see SOURCES.md), then edge cases.

The expected values in REAL were read by hand from the source files, not computed by the
parser: the training iteration of every evaluation, best/final mIoU, seed and MD_R.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from segnext_hub.errors import BadInputError
from segnext_hub.tasks.logs import (
    RULE_LOGGED, RULE_PREVIOUS, format_summary, parse_log, parse_log_lines, parse_log_text, plot_log,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "logs"

# file -> what its source says. curve: (training iteration, mIoU %) of every evaluation kept.
REAL = {
    "mmcv-1.4.6_segnext-b_celebamask.log.json": dict(
        format="mmcv", dialect="mmcv-json", curve=[(4000, 74.34), (156000, 79.5), (160000, 79.47)],
        best=(79.5, 156000), final=(79.47, 160000), aacc=95.75, macc=86.27, seed=1769036558, md_r=16,
        num_iters=160000, mmcv="1.4.6", rule=RULE_PREVIOUS),
    "mmcv-1.6.0_segnext-l_voc.log.json": dict(
        format="mmcv", dialect="mmcv-json",
        curve=[(5000, 54.87), (10000, 56.34), (35000, 75.76), (40000, 74.74)],
        best=(75.76, 35000), final=(74.74, 40000), aacc=94.15, macc=83.54, seed=1636082973, md_r=64,
        num_iters=40000, mmcv="1.6.0", rule=RULE_PREVIOUS),
    "mmcv-1.7.0_deeplabv3plus_voc.log.json": dict(
        format="mmcv", dialect="mmcv-json", curve=[(3000, 49.17), (6000, 56.22), (15000, 70.0)],
        best=(70.0, 15000), final=(70.0, 15000), aacc=92.49, macc=85.06, seed=0, md_r=None,
        num_iters=15000, mmcv="1.7.0", rule=RULE_PREVIOUS),
    "mmcv-unknown_pspnet_potato.log.json": dict(
        format="mmcv", dialect="mmcv-json",
        curve=[(200, 92.01), (9800, 95.6), (27600, 95.6), (40000, 95.37)],
        best=(95.6, 9800), final=(95.37, 40000), aacc=99.26, macc=97.21, seed=None, md_r=None,
        num_iters=40000, mmcv=None, rule=RULE_PREVIOUS),
    "mmcv-1.4.6_segnext-b_celebamask.log": dict(
        format="mmcv", dialect="mmcv-text", curve=[(4000, 74.34), (160000, 79.47)],
        best=(79.47, 160000), final=(79.47, 160000), aacc=95.75, macc=86.27, seed=1769036558, md_r=16,
        num_iters=160000, mmcv="1.4.6", rule=RULE_PREVIOUS),
    "mmcv-1.7.1_pspnet_glomeruli.log": dict(
        format="mmcv", dialect="mmcv-text", curve=[(200, 49.05), (400, 50.6), (2000, 90.32)],
        best=(90.32, 2000), final=(90.32, 2000), aacc=99.6, macc=94.91, seed=514799972, md_r=None,
        num_iters=2000, mmcv="1.7.1", rule=RULE_PREVIOUS),
    "mmengine-0.5.0_pspnet_glomeruli.scalars.json": dict(
        format="mmengine", dialect="mmengine-json", curve=[(400, 74.85), (800, 63.09), (1200, 84.64)],
        best=(84.64, 1200), final=(84.64, 1200), aacc=99.46, macc=85.59, seed=None, md_r=None,
        num_iters=1200, mmcv=None, rule=RULE_LOGGED),
    "mmengine-0.7.3_pspnet_watermelon.scalars.json": dict(
        format="mmengine", dialect="mmengine-json", curve=[(400, 20.98), (800, 49.25), (2800, 57.88)],
        best=(57.88, 2800), final=(57.88, 2800), aacc=88.69, macc=64.8, seed=None, md_r=None,
        num_iters=3000, mmcv=None, rule=RULE_LOGGED),
    "mmengine-0.5.0_pspnet_glomeruli.log": dict(
        format="mmengine", dialect="mmengine-text", curve=[(400, 74.85), (800, 63.09), (1200, 84.64)],
        best=(84.64, 1200), final=(84.64, 1200), aacc=99.46, macc=85.59, seed=10, md_r=None,
        num_iters=1200, mmcv=None, rule=RULE_PREVIOUS),
}

TEST_RESULTS = {  # one evaluation, no training: (dialect, aAcc, mIoU, mAcc)
    "mmengine-0.5.0_test_result.json": ("mmengine-test-json", 96.45, 63.09, 90.81),
    "mmengine-0.7.3_test_result.json": ("mmengine-test-json", 90.67, 60.01, 67.12),
    "mmseg-0.24_segnext-l_voc_eval_single_scale.json": ("mmseg-test-json", 94.12, 73.96, 84.08),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_training_logs(name):
    want = REAL[name]
    summary = parse_log(DATA / name)
    assert (summary.format, summary.dialect, summary.kind) == (want["format"], want["dialect"], "training")
    assert list(summary.miou_curve) == want["curve"]  # the true training iteration of each evaluation
    assert (summary.best_miou, summary.best_miou_iter) == want["best"]
    assert (summary.final_miou, summary.final_miou_iter) == want["final"]
    assert (summary.final_aacc, summary.final_macc) == (want["aacc"], want["macc"])
    assert (summary.seed, summary.md_r) == (want["seed"], want["md_r"])
    assert summary.num_iters == want["num_iters"] and summary.num_evals == len(want["curve"])
    assert summary.mmcv_version == want["mmcv"] and summary.eval_iter_rule == want["rule"]
    assert summary.skipped_lines == 0 and summary.warnings == ()


@pytest.mark.parametrize("name", sorted(TEST_RESULTS))
def test_real_test_results(name):
    dialect, aacc, miou, macc = TEST_RESULTS[name]
    summary = parse_log(DATA / name)
    assert (summary.dialect, summary.kind) == (dialect, "test")
    assert (summary.final_aacc, summary.final_miou, summary.final_macc) == (aacc, miou, macc)
    assert summary.best_miou == miou and summary.best_miou_iter is None and summary.final_miou_iter is None
    assert summary.num_iters is None and summary.miou_curve == () and summary.eval_iter_rule is None


def test_values_read_as_fractions_are_rounded_at_parse():
    # the source holds "mIoU": 0.7395999999999999; nothing downstream may see 73.95999999999999
    summary = parse_log(DATA / "mmseg-0.24_segnext-l_voc_eval_single_scale.json")
    assert repr(summary.best_miou) == "73.96"
    assert "73.96," in json.dumps(summary.as_dict())
    for name in REAL:
        for _, value in parse_log(DATA / name).miou_curve:
            assert value == round(value, 2) and len(repr(value)) <= 6


def test_where_md_r_and_seed_come_from():
    json_log = parse_log(DATA / "mmcv-1.4.6_segnext-b_celebamask.log.json")
    assert (json_log.md_r_source, json_log.md_r_note) == ("training log meta.config", "ham_kwargs MD_R=16")
    assert json_log.seed_source == "training log meta.seed"
    text_log = parse_log(DATA / "mmcv-1.4.6_segnext-b_celebamask.log")  # dump says ham_kwargs=dict(MD_R=16)
    assert (text_log.md_r_source, text_log.md_r_note) == ("training log config dump", "ham_kwargs MD_R=16")
    assert text_log.seed_source == "training log 'Set random seed to' line"
    large = parse_log(DATA / "mmcv-1.6.0_segnext-l_voc.log.json")  # official L config: no ham_kwargs
    assert large.md_r == 64 and large.md_r_note == "LightHamHead without MD_R: code default 64"
    engine = parse_log(DATA / "mmengine-0.5.0_pspnet_glomeruli.log")
    assert engine.seed_source == "training log environment block" and engine.mmengine_version == "0.5.0"


def test_batch_count_larger_than_the_iteration_without_a_version():
    """Iter(val) [515] after training iteration 200: only the file-wide pattern tells."""
    lines = (DATA / "mmcv-1.7.1_pspnet_glomeruli.log").read_text().splitlines()
    unversioned = [line for line in lines if not line.startswith(("MMCV", "MMSegmentation"))]
    summary = parse_log_lines(unversioned)
    assert summary.mmcv_version is None
    assert [it for it, _ in summary.miou_curve] == [200, 400, 2000] and summary.warnings == ()


def test_a_single_ambiguous_evaluation_is_flagged():
    lines = (DATA / "mmcv-1.7.1_pspnet_glomeruli.log").read_text().splitlines()
    first_eval = next(i for i, line in enumerate(lines) if "Iter(val)" in line)
    head = [line for line in lines[:first_eval + 1] if not line.startswith("MMCV")]
    summary = parse_log_lines(head)
    assert summary.miou_curve == ((200, 49.05),)
    assert any("could not tell" in w for w in summary.warnings)


def mmcv13_lines():
    """SYNTHETIC, not a real log: what mmcv < 1.3.4 wrote (no public one was found).

    mmcv v1.3.0's TextLoggerHook logs val records with ``iter=runner.iter + 1`` (the
    training iteration), and MMSeg's eval hook logged them before that iteration's train
    record (UPSTREAM.md section 6).
    """
    records = [{"env_info": "sys.platform: linux\nMMCV: 1.3.0\nMMSegmentation: 0.12.0", "seed": 7,
                "exp_name": "x.py", "mmseg_version": "0.12.0", "config": "seed = 7\n"}]
    for it in range(50, 601, 50):
        if it % 200 == 0:
            records.append({"mode": "val", "epoch": 1, "iter": it, "lr": 0.01,
                            "aAcc": 0.9, "mIoU": 0.3 + it / 10000, "mAcc": 0.5})
        records.append({"mode": "train", "epoch": 1, "iter": it, "lr": 0.01, "loss": 1.0})
    return [json.dumps(r) for r in records]


def test_mmcv_1_3_val_records_carry_the_training_iteration():
    summary = parse_log_lines(mmcv13_lines())
    assert summary.eval_iter_rule == RULE_LOGGED and summary.mmcv_version == "1.3.0"
    assert summary.miou_curve == ((200, 32.0), (400, 34.0), (600, 36.0))
    assert (summary.best_miou_iter, summary.seed) == (600, 7)
    # the layout alone gives the same answer when the version line is missing
    unversioned = [mmcv13_lines()[0].replace("MMCV: 1.3.0\\n", "")] + mmcv13_lines()[1:]
    again = parse_log_lines(unversioned)
    assert again.mmcv_version is None and again.miou_curve == summary.miou_curve and again.warnings == ()


def test_val_record_mislabelled_as_train_is_still_an_evaluation():
    # seen in open-mmlab/mmsegmentation#2899: a metrics record with "mode": "train", "iter": 500
    lines = [
        '{"mode": "train", "epoch": 6, "iter": 15950, "lr": 5e-05, "loss": 3.28812}',
        '{"mode": "train", "epoch": 6, "iter": 500, "lr": 5e-05, "aAcc": 0.8972, "mIoU": 0.4799, "mAcc": 0.5863}',
        '{"mode": "train", "epoch": 6, "iter": 16050, "lr": 5e-05, "loss": 3.33729}',
    ]
    summary = parse_log_lines(lines)
    assert summary.miou_curve == ((15950, 47.99),) and summary.num_iters == 16050
    assert [it for it, _ in summary.loss_curve] == [15950, 16050]


def test_mmengine_test_run_text_log():
    """``Iter(test)`` lines as MMEngine 0.5.0 writes them (chg0901/openmmlab-hong's test log)."""
    lines = ["2023/02/15 06:01:57 - mmengine - INFO - Load checkpoint from ./work_dirs/glomeruili3/iter_800.pth",
             "2023/02/15 06:02:01 - mmengine - INFO - Iter(test) [100/515]    eta: 0:00:16  time: 0.0352",
             "2023/02/15 06:02:16 - mmengine - INFO - Iter(test) [515/515]  "
             "aAcc: 96.4500  mIoU: 63.0900  mAcc: 90.8100"]
    summary = parse_log_lines(lines)
    assert (summary.kind, summary.final_miou, summary.final_miou_iter) == ("test", 63.09, None)
    trained = (DATA / "mmengine-0.5.0_pspnet_glomeruli.log").read_text().splitlines() + lines[1:]
    after = parse_log_lines(trained)  # a test appended to a training log is not a validation
    assert after.final_miou == 84.64 and any("test-run" in w for w in after.warnings)


def test_metrics_wrapped_onto_the_next_line():
    lines = ["2023/06/16 12:09:20 - mmengine - INFO - Iter(train) [3600/4000]  lr: 1.0e-03  loss: 0.1000",
             "2023/06/16 12:09:59 - mmengine - INFO - Iter(val) [11/11]  ",
             "aAcc: 94.2700  mIoU: 77.2600  mAcc: 86.7700  data_time: 0.0016  time: 0.2658"]
    assert parse_log_lines(lines).miou_curve == ((3600, 77.26),)


def test_malformed_lines_are_skipped_and_counted(tmp_path):
    lines = (DATA / "mmcv-1.6.0_segnext-l_voc.log.json").read_text().splitlines()
    lines.insert(3, '{"mode": "train", "iter": 150, "lo')  # truncated write
    lines.insert(5, "[1, 2, 3]")  # JSON but not a record
    lines.insert(7, '{"mode": "train", "iter": "many", "loss": 1.0}')  # iteration not a number
    lines.insert(9, "")  # blank lines are not counted at all
    lines.append("\ufffd\ufffdgarbage")
    path = tmp_path / "damaged.log.json"
    path.write_text("\n".join(lines) + "\n")
    summary = parse_log(path)
    assert summary.skipped_lines == 4 and summary.num_lines == 16 + 4
    assert summary.best_miou == 75.76 and summary.seed == 1636082973
    assert any("4 of 20" in w for w in summary.warnings) and "4 skipped" in format_summary(summary)


def test_empty_log_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.log.json"
    path.write_text("\n   \n")
    with pytest.raises(BadInputError, match="is empty") as info:
        parse_log(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"not json\n{broken\n", b"{}\n{}\n", b"hello world\n"])
def test_file_without_records_is_one_clear_line(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(BadInputError, match="holds no training-log records") as info:
        parse_log(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_binary_file_and_directory_are_refused(tmp_path):
    blob = tmp_path / "model.pth"
    blob.write_bytes(b"PK\x03\x04\x00\x00" + bytes(range(256)))
    with pytest.raises(BadInputError, match="is not a training log") as info:
        parse_log(blob)
    assert str(blob) in str(info.value)
    with pytest.raises(BadInputError, match="cannot read training log"):
        parse_log(tmp_path)
    with pytest.raises(BadInputError, match="cannot read training log"):
        parse_log(tmp_path / "absent.log.json")


def test_test_result_with_non_numeric_metrics(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"aAcc": "n/a", "mIoU": null, "mAcc": 1}')
    with pytest.raises(BadInputError, match="not numbers") as info:
        parse_log(path)
    assert str(path) in str(info.value)


def test_percent_logged_through_mmcv_is_not_rescaled():
    lines = ['{"mode": "train", "epoch": 1, "iter": 50, "lr": 0.01, "loss": 1.0}',
             '{"mode": "val", "epoch": 1, "iter": 20, "lr": 0.01, "aAcc": 80.5, "mIoU": 39.13, "mAcc": 52.2}']
    summary = parse_log_lines(lines)
    assert summary.metric_scale == "percent" and summary.miou_curve == ((50, 39.13),)


def test_summary_text_and_dict():
    summary = parse_log(DATA / "mmcv-1.6.0_segnext-l_voc.log.json")
    text = format_summary(summary)
    assert "best mIoU     75.76% (iter 35000)" in text and "final mIoU    74.74% (iter 40000)" in text
    assert "mmcv 1.6.0" in text and "1636082973 (training log meta.seed)" in text
    assert "64 (training log meta.config; LightHamHead without MD_R: code default 64)" in text
    data = json.loads(json.dumps(summary.as_dict()))
    assert "loss_curve" not in data and data["best_miou_iter"] == 35000 and data["md_r"] == 64
    curves = json.loads(json.dumps(summary.as_dict(curves=True)))
    assert curves["miou_curve"][2] == [35000, 75.76] and curves["loss_curve"][0][0] == 4950
    assert "not recorded" in format_summary(parse_log(DATA / "mmengine-0.7.3_pspnet_watermelon.scalars.json"))


def test_parse_log_text_equals_parse_log():
    path = DATA / "mmengine-0.5.0_pspnet_glomeruli.log"
    assert parse_log_text(path.read_text(), source=str(path)) == parse_log(path)


def test_plot_uses_the_true_iterations(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    drawn = []
    real_plot = Axes.plot
    def spy(self, xs, ys, **kwargs):
        drawn.append(list(xs))
        return real_plot(self, xs, ys, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    out = plot_log(parse_log(DATA / "mmcv-1.4.6_segnext-b_celebamask.log.json"), tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn[1] == [4000, 156000, 160000]  # not the logged 2993 of every val record


def test_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(BadInputError, match=r"pip install 'segnext-hub\[plot\]'"):
        plot_log(parse_log(DATA / "mmengine-0.5.0_pspnet_glomeruli.scalars.json"), tmp_path / "x.png")


def test_log_parsing_does_not_import_torch():
    code = ("import sys, segnext_hub.tasks.logs as logs; "
            f"logs.parse_log({str(DATA / 'mmcv-1.6.0_segnext-l_voc.log.json')!r}); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_byte_order_mark_and_bracketed_text(tmp_path):
    path = tmp_path / "bom.log.json"
    path.write_bytes(b"\xef\xbb\xbf" + (DATA / "mmengine-0.5.0_pspnet_glomeruli.scalars.json").read_bytes())
    assert parse_log(path).best_miou == 84.64
    text = "[INFO] not a log\n" + (DATA / "mmengine-0.5.0_pspnet_glomeruli.log").read_text()
    assert parse_log_text(text).final_miou == 84.64


@pytest.mark.parametrize("name, seed, mmcv, mmseg", [
    ("mmcv-1.4.6_segnext-b_celebamask.log.json", 1769036558, "1.4.6", "0.25.0+"),
    ("mmcv-1.6.0_segnext-l_voc.log.json", 1636082973, "1.6.0", "0.24.1+"),
    ("mmcv-1.7.0_deeplabv3plus_voc.log.json", 0, "1.7.0", "0.29.1+9625c9b"),
])
def test_mmseg_0x_json_header_gives_seed_and_versions(name, seed, mmcv, mmseg):
    """Issue 21 point 5, on the real MMSeg 0.x logs in tests/data/logs (sources in SOURCES.md):
    the first record's ``seed`` (0 included: a seed of 0 is a seed), ``mmseg_version`` and the
    versions printed in ``env_info`` are reported."""
    summary = parse_log(DATA / name)
    assert (summary.seed, summary.seed_source) == (seed, "training log meta.seed")
    assert (summary.mmcv_version, summary.mmseg_version) == (mmcv, mmseg)


def test_mmseg_version_key_alone_is_read_when_env_info_is_missing():
    """The real deeplabv3plus header without its env_info block: mmseg_version still comes through."""
    lines = (DATA / "mmcv-1.7.0_deeplabv3plus_voc.log.json").read_text().splitlines()
    header = json.loads(lines[0])
    del header["env_info"]
    summary = parse_log_lines([json.dumps(header)] + lines[1:])
    assert (summary.seed, summary.mmseg_version, summary.mmcv_version) == (0, "0.29.1+9625c9b", None)
