"""fuse() says what it will not do and when it is slow (issue 20, point 7).

Evidence: the real fused model on CPU; torch.compile itself is not run (a minute per shape),
only the notice around its first call per shape.
"""

from __future__ import annotations

import logging

import pytest
import torch

from segnext_hub import create_model
from segnext_hub.models.fused import model as fused_model


def test_cuda_graphs_on_a_cpu_model_warns():
    model = create_model("t", num_classes=4).eval()
    with pytest.warns(RuntimeWarning, match=r"cuda_graphs=True\): the model is on cpu"):
        model.fuse(cuda_graphs=True)


def test_the_first_compiled_call_per_shape_is_announced(caplog):
    caplog.set_level(logging.INFO, logger="segnext_hub.models.fused.model")
    seen: set = set()
    x = torch.zeros(1, 3, 64, 64)
    for _ in range(2):
        with fused_model._compile_progress((x,), seen):
            pass
    with fused_model._compile_progress((torch.zeros(1, 3, 32, 32),), seen):
        pass
    messages = [r.getMessage() for r in caplog.records]
    assert sum("compiling the backbone for input 1x3x64x64" in m for m in messages) == 1
    assert sum("compiling the backbone for input 1x3x32x32" in m for m in messages) == 1
    assert any("ready after" in m for m in messages)
