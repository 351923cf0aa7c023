"""The registry's ``params`` field (what ``segnext-hub list`` prints) is data; these tests
check it against the real model so that it cannot drift from the code.

Evidence: the package's own reference model (``create_model``), built on the meta device.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from segnext_hub.errors import BadInputError
from segnext_hub.hub.registry import expected_param_count, list_artifacts, load_registry
from segnext_hub.models import build_model, get_variant

from .test_registry import packaged_document


def real_param_count(variant: str, kind: str, num_classes: int | None, ham_channels: int | None = None) -> int:
    with torch.device("meta"):
        model = build_model(variant, num_classes=num_classes or 1, backbone_only=kind == "backbone",
                            ham_channels=ham_channels)
    return sum(p.numel() for p in model.parameters())


_MODELS = sorted({(a.variant, a.kind, a.num_classes or 0, a.ham_channels or 0) for a in list_artifacts()})


@pytest.mark.parametrize("variant, kind, num_classes, ham_channels", _MODELS, ids=lambda v: str(v))
def test_params_field_equals_the_real_models_parameter_count(variant, kind, num_classes, ham_channels):
    real = real_param_count(variant, kind, num_classes or None, ham_channels or None)
    same_model = [a for a in list_artifacts()
                  if (a.variant, a.kind, a.num_classes or 0, a.ham_channels or 0)
                  == (variant, kind, num_classes, ham_channels)]
    wrong = {a.name: a.params for a in same_model if a.params != real}
    assert not wrong, f"registry params differ from the model's {real}: {wrong}"
    assert all(expected_param_count(a) == real for a in same_model)


def test_ade20k_segmentor_counts_agree_with_the_variant_table():
    for art in list_artifacts():
        if art.kind == "segmentor" and art.num_classes == 150:
            assert art.params == get_variant(art.variant).num_params_ade20k, art.name


@pytest.mark.parametrize("value", [0, -5, "4M", 4.2e6, True, None])
def test_a_params_field_that_is_not_a_positive_integer_is_rejected(tmp_path, value):
    doc = packaged_document()
    doc["artifacts"][1]["params"] = value
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(BadInputError, match=r"entry 2 \('mscan-s'\): params must be a positive integer"):
        load_registry(path)
