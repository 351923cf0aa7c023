"""examples/finetune.py end to end on a tiny generated dataset (self-written fixture): SegNeXt-T,
64x64 crops, batch 2, on the CPU. The loss falls, a resumed run keeps the schedule and the
counter, and the saved file loads for inference with its classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segnext_hub
from segnext_hub.training.checkpoint import save_checkpoint
from tests.helpers.scripts import load_script

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "finetune.py"
COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]], np.uint8)
CLASSES = ["brick", "grass", "water"]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny tensors on a shared 2-core machine: a second thread only waits for the first."""


@pytest.fixture(scope="module")
def finetune():
    return load_script(EXAMPLE, "finetune_example")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four images whose colour says the class (plus noise): a model can fit them quickly."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for i in range(4):
        label = np.kron(rng.integers(0, 3, (6, 8)), np.ones((8, 8), np.int64)).astype(np.uint8)
        noise = rng.integers(-20, 21, label.shape + (3,))
        image = np.clip(COLOURS[label].astype(np.int64) + noise, 0, 255).astype(np.uint8)
        for folder, array in (("images", image), ("labels", label)):
            (root / folder).mkdir(exist_ok=True)
            Image.fromarray(array).save(root / folder / f"{i}.png")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def run(finetune, dataset: Path, out: Path, *extra: str, iters: int = 8, lr: str = "6e-5",
        start: tuple[str, ...] = ("--model", "t", "--backbone", "none")) -> int:
    return finetune.main([str(dataset), *start, "--classes",
                          str(dataset / "classes.txt"), "--iters", str(iters), "--batch-size", "2",
                          "--lr", lr, "--crop-size", "64", "--out", str(out), "--workers", "0",
                          "--device", "cpu", "--seed", "3", *extra])


def log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_loss_falls_on_data_it_can_fit(finetune, dataset: Path, tmp_path: Path):
    assert run(finetune, dataset, tmp_path / "fit", "--warmup", "2", "--save-every", "100",
               iters=30, lr="1e-3") == 0
    losses = [entry["loss"] for entry in log(tmp_path / "fit")]
    assert len(losses) == 30
    # Random crops and flips, dropout, drop path and the NMF's random bases make single
    # losses noisy: compare medians.
    first, last = np.median(losses[:5]), np.median(losses[-10:])
    assert last < 0.5 * first, (first, last)


def test_resume_continues_the_schedule_and_the_counter(finetune, dataset: Path, tmp_path: Path, monkeypatch,
                                                       capsys):
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert run(finetune, dataset, whole, "--warmup", "2", "--save-every", "3") == 0

    real_save, saves = finetune.save_checkpoint, []

    def crash_at_the_second_save(*args, **kwargs):  # saved at 3, killed at 6 before saving
        saves.append(kwargs["iteration"])
        if len(saves) == 2:
            raise KeyboardInterrupt
        real_save(*args, **kwargs)

    monkeypatch.setattr(finetune, "save_checkpoint", crash_at_the_second_save)
    assert run(finetune, dataset, split, "--warmup", "2", "--save-every", "3") == 130
    assert "--resume" in capsys.readouterr().err
    assert [entry["iteration"] for entry in log(split)] == [1, 2, 3, 4, 5, 6]
    with open(split / "log.jsonl", "a") as handle:
        handle.write('{"iteration": 7, "lo')  # a line cut short by the kill
    monkeypatch.setattr(finetune, "save_checkpoint", real_save)

    with pytest.raises(SystemExit) as info:  # no silent overwrite of a run
        run(finetune, dataset, split, "--warmup", "2", "--save-every", "3")
    assert info.value.code == 2
    assert "pass --resume" in capsys.readouterr().err

    assert run(finetune, dataset, split, "--warmup", "2", "--save-every", "3", "--resume") == 0
    resumed, reference = log(split), log(whole)
    # Iterations 4-6 ran twice; the log keeps each iteration once.
    assert [entry["iteration"] for entry in resumed] == list(range(1, 9))
    assert [entry["lr"] for entry in resumed] == [entry["lr"] for entry in reference]
    lrs = [entry["lr"] for entry in reference]
    assert lrs[0] < lrs[1] == lrs[2] > lrs[-2] > lrs[-1] == 0  # warm-up, then poly decay to 0
    # Same samples, same weights and moments, same RNG state (drop path, dropout, NMF bases):
    # the resumed iterations compute the very same losses.
    assert [entry["loss"] for entry in resumed] == [entry["loss"] for entry in reference]


@pytest.mark.parametrize("start", ["segmentor", "backbone"])
def test_starts_from_an_artifact_and_saves_a_file_that_loads_and_predicts(finetune, dataset: Path, tmp_path: Path,
                                                                          start: str):
    """--model FILE (a 150-class segmentor: new 3-class classifier) or --model t --backbone FILE."""
    torch.manual_seed(0)
    source = segnext_hub.create_model("t", num_classes=150, backbone_only=start == "backbone")
    artifact = save_checkpoint(tmp_path / f"{start}.safetensors", source)
    start_args = ("--model", str(artifact)) if start == "segmentor" else ("--model", "t", "--backbone", str(artifact))
    # A vanishing lr: the trained weights must still be the artifact's.
    assert run(finetune, dataset, tmp_path / "run", "--save-every", "3", iters=4, lr="1e-20", start=start_args) == 0

    model = segnext_hub.load(tmp_path / "run" / "last.safetensors")
    source_state, compared = source.state_dict(), 0
    for name, value in model.state_dict().items():
        source_name = name.removeprefix("backbone.") if start == "backbone" else name
        # Convolutions (BN statistics move in train mode), all but the new classifier.
        if value.ndim == 4 and "conv_seg" not in name and source_name in source_state:
            assert torch.allclose(value, source_state[source_name], atol=1e-6), name
            compared += 1
    assert compared > 20
    assert model.num_classes == 3 and not model.training
    assert list(model.segnext_config.classes) == CLASSES
    image = np.array(Image.open(dataset / "images" / "0.png"))
    mask = model.predict(image, scale=None)[0].mask
    assert mask.shape == image.shape[:2] and int(mask.max()) < 3


@pytest.mark.parametrize("args, message", [
    (["--iters", "1"], "--iters must be at least 2"),
    (["--warmup", "1"], "--warmup must be 0 or between 2 and --iters - 2"),
    (["--warmup", "7"], "--warmup must be 0 or between 2 and --iters - 2"),
    (["--resume"], "does not exist"),
    (["--precision", "fp8"], "invalid choice"),
    (["--model", "mscan-x"], "--model must be a variant (t, s, b, l) with --backbone"),
])
def test_argument_errors_are_one_line_and_exit_2(finetune, dataset: Path, tmp_path: Path, capsys, args, message):
    with pytest.raises(SystemExit) as info:
        run(finetune, dataset, tmp_path / "bad", *args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and err.count("\n") == 1, err


def test_bad_data_is_one_line_and_exit_2(finetune, dataset: Path, tmp_path: Path, capsys):
    assert run(finetune, tmp_path, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "neither images/ + labels/" in err and err.count("\n") == 1


def test_bad_label_found_by_a_dataloader_worker_is_one_line(finetune, dataset: Path, tmp_path: Path, capsys):
    """The error crosses a worker process (which wraps it in a traceback) and still reads as one line."""
    broken = tmp_path / "broken"
    for folder in ("images", "labels"):
        (broken / folder).mkdir(parents=True)
        for path in (dataset / folder).iterdir():
            (broken / folder / path.name).write_bytes(path.read_bytes())
    Image.fromarray(np.full((48, 64), 7, np.uint8)).save(broken / "labels" / "2.png")
    (broken / "classes.txt").write_text("\n".join(CLASSES))
    assert run(finetune, broken, tmp_path / "out", "--workers", "1", "--batch-size", "4", "--no-label-check",
               iters=2) == 2
    err = capsys.readouterr().err
    expected = f"label {broken / 'labels' / '2.png'} holds value 7; expected 0..2 or 255 (ignored)"
    assert err == f"finetune.py: error: {expected}\n"


def _copy(dataset: Path, target: Path) -> Path:
    for folder in ("images", "labels"):
        (target / folder).mkdir(parents=True)
        for path in (dataset / folder).iterdir():
            (target / folder / path.name).write_bytes(path.read_bytes())
    (target / "classes.txt").write_text("\n".join(CLASSES))
    return target


def test_takes_the_folder_above_the_dataset_and_checks_labels_before_training(finetune, dataset: Path,
                                                                            tmp_path: Path, capsys):
    """Issue 20: the parent folder eval accepts was refused; a bad label showed only when sampled."""
    inner = _copy(dataset, tmp_path / "parent" / "mine")
    Image.fromarray(np.full((48, 64), 9, np.uint8)).save(inner / "labels" / "3.png")
    out = tmp_path / "out"
    assert finetune.main([str(tmp_path / "parent"), "--model", "t", "--backbone", "none", "--classes",
                          str(inner / "classes.txt"), "--iters", "2", "--batch-size", "2", "--crop-size", "64",
                          "--out", str(out), "--workers", "0", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"dataset {inner} (4 images, 3 classes)" in err
    assert err.strip().splitlines()[-1] == (f"finetune.py: error: label {inner / 'labels' / '3.png'} holds value 9; "
                                            "expected 0..2 or 255 (ignored)")
    assert not (out / "log.jsonl").exists()  # refused before the first iteration


def test_reports_lines_without_a_terminal_and_says_what_it_wrote(finetune, dataset: Path, tmp_path: Path, capsys):
    out = tmp_path / "lines"
    assert run(finetune, dataset, out, "--log-every", "2", "--save-every", "100", iters=4) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("finetune.py: iteration")]
    assert [line.split()[2] for line in lines] == ["2/4", "4/4"], captured.err
    assert f"wrote {out / 'last.safetensors'} (iteration 4)" in captured.out


def test_help_shows_the_defaults(finetune, capsys):
    with pytest.raises(SystemExit):
        finetune.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 160000)" in text and "(default: 6e-05)" in text and "(default: 50)" in text
