"""Training checkpoints: load() reads them, a resumed run continues exactly, a broken pair is
refused. Evidence: round trips through the library's own writer and safetensors reader."""

from __future__ import annotations

import pytest
import torch

import segnext_hub
from segnext_hub.errors import BadInputError
from segnext_hub.training.checkpoint import resume_checkpoint, save_checkpoint, state_path
from segnext_hub.training.optim import param_groups, poly_schedule


def _run(model, optimizer, scheduler, steps: int, batches: list) -> None:
    model.train()
    for i in range(steps):
        images, labels = batches[i]
        optimizer.zero_grad()
        model.loss(images, labels).backward()
        optimizer.step()
        scheduler.step()


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = segnext_hub.create_model("t", num_classes=3, md_r=4)
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-3), lr=1e-3, weight_decay=0.01)
    return model, optimizer, poly_schedule(optimizer, total_iters=20, warmup_iters=2)


@pytest.fixture(scope="module")
def batches() -> list:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn((2, 3, 32, 32), generator=gen), torch.randint(0, 3, (2, 32, 32), generator=gen))
            for _ in range(4)]


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, batches, one_torch_thread):
    model, optimizer, scheduler = _setup()
    torch.manual_seed(7)
    _run(model, optimizer, scheduler, 4, batches)

    model_a, optimizer_a, scheduler_a = _setup()
    torch.manual_seed(7)
    _run(model_a, optimizer_a, scheduler_a, 2, batches)
    path = save_checkpoint(tmp_path / "last.safetensors", model_a, classes=["sky", "road", "car"],
                           optimizer=optimizer_a, scheduler=scheduler_a, iteration=2, extra={"epoch": 0})
    torch.manual_seed(999)  # the RNG state comes back from the checkpoint (drop path, NMF, dropout)
    model_b, optimizer_b, scheduler_b = _setup(seed=3)  # other initial weights: all replaced
    assert resume_checkpoint(path, model_b, optimizer_b, scheduler_b) == {"iteration": 2, "extra": {"epoch": 0}}
    _run(model_b, optimizer_b, scheduler_b, 2, batches[2:])
    for (name, a), b in zip(model.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    assert scheduler_b.last_epoch == 4 and optimizer_b.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_load_reads_a_training_checkpoint(tmp_path):
    model = segnext_hub.create_model("t", num_classes=3)
    path = save_checkpoint(tmp_path / "ft.safetensors", model, classes=["sky", "road", "car"],
                           palette=[[0, 0, 255], [128, 128, 128], [255, 0, 0]], iteration=10)
    loaded = segnext_hub.load(path)
    assert loaded.segnext_config.classes == ("sky", "road", "car")
    assert loaded.segnext_config.palette == ((0, 0, 255), (128, 128, 128), (255, 0, 0))
    assert loaded.num_classes == 3 and loaded.segnext_config.md_r == model.decode_head.md_r
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert not state_path(path).exists()  # no optimiser: weights only
    [prediction] = loaded.predict(torch.randint(0, 256, (40, 48, 3), dtype=torch.uint8).numpy())
    assert prediction.mask.shape == (40, 48) and int(prediction.mask.max()) < 3


def test_a_pair_from_different_iterations_is_refused(tmp_path):
    model, optimizer, scheduler = _setup()
    path = save_checkpoint(tmp_path / "last.safetensors", model, optimizer=optimizer, scheduler=scheduler, iteration=5)
    kept = state_path(path).read_bytes()
    save_checkpoint(path, model, iteration=6)  # weights rewritten, the state file left at 5
    assert state_path(path).read_bytes() == kept
    with pytest.raises(BadInputError, match="iteration 5 but last.safetensors from 6"):
        resume_checkpoint(path, *_setup())
    state_path(path).unlink()
    with pytest.raises(BadInputError, match="last.train-state.pt is missing"):
        resume_checkpoint(path, *_setup())
    assert resume_checkpoint(path, _setup()[0])["iteration"] == 6  # weights alone still resume a model


def test_bad_saves_write_nothing(tmp_path):
    model = segnext_hub.create_model("t", num_classes=3)
    with pytest.raises(BadInputError, match="2 classes for a 3-class head"):
        save_checkpoint(tmp_path / "a.safetensors", model, classes=["a", "b"])
    with pytest.raises(BadInputError, match=r"\.safetensors"):
        save_checkpoint(tmp_path / "a.pth", model)
    with pytest.raises(BadInputError, match="inference-only"):
        save_checkpoint(tmp_path / "a.safetensors", model.fuse())
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "s.safetensors", segnext_hub.create_model("s", num_classes=3))
    with pytest.raises(BadInputError, match="SegNeXt-S segmentor with 3 classes; it does not fit"):
        resume_checkpoint(path, segnext_hub.create_model("t", num_classes=3))
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(BadInputError, match="cannot read|not a segnext-hub checkpoint"):
        resume_checkpoint(tmp_path / "junk.safetensors", segnext_hub.create_model("t", num_classes=3))
