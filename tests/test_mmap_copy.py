"""``load(..., mmap=False)`` copies the weights; the default maps the file (issue 19,
finding 13). What a rewrite of a mapped file in place does is documented in
docs/reliability.md; this shows it on a real file.

Evidence: a converter-written model.safetensors (random SegNeXt-T), overwritten in place
through an ordinary file handle after the loads, as an editor or ``cp`` over it would.
"""

from __future__ import annotations

import json

import torch

from segnext_hub import load
from segnext_hub.conversion.converter import convert
from tests.helpers import factory


def test_mmap_false_copies_and_the_default_follows_the_file(tmp_path):
    state = factory.mmseg_state("t", seed=5, md_r=16)
    factory.write_mmseg(tmp_path / "src.pth", state)
    folder = tmp_path / "model"
    folder.mkdir()
    weights = folder / "model.safetensors"
    convert(tmp_path / "src.pth", weights, verify=False)
    (folder / "config.json").write_text(json.dumps({"variant": "t", "kind": "segmentor", "num_classes": 150,
                                                    "md_r": 16}))
    mapped, copied = load(folder), load(folder, mmap=False)
    key = "decode_head.conv_seg.weight"
    original = state[key].clone()
    assert torch.equal(mapped.state_dict()[key], original) and torch.equal(copied.state_dict()[key], original)

    data = weights.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    with open(weights, "r+b") as handle:  # in place: same inode, no rename
        handle.seek(header)
        handle.write(bytes(len(data) - header))
    assert torch.equal(copied.state_dict()[key], original)  # its own memory
    assert not torch.equal(mapped.state_dict()[key], original)  # a map shows the file's new bytes
    del mapped
    weights.write_bytes(b"")  # truncated: touching a mapped tensor now would be SIGBUS
    assert torch.equal(copied.state_dict()[key], original)
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        assert copied(x, generator=torch.Generator().manual_seed(0)).shape == (1, 150, 8, 8)
