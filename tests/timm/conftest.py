"""timm and segmentation_models_pytorch live in their own venv (`make timm-venv`): PyPI's
torchvision does not load beside the CPU torch 2.13.0 of the main venv. Elsewhere the tests
that need them skip with that reason; with SEGNEXT_REQUIRE_TIMM=1 (as `make test-timm` sets
it) a missing or broken timm fails instead of skipping."""

from __future__ import annotations

import os

import pytest


def require_timm() -> None:
    """Skip the calling test module (at import) unless timm and smp import here."""
    try:
        import segmentation_models_pytorch  # noqa: F401
        import timm  # noqa: F401 - imports torchvision, which is where it breaks
    except Exception as err:  # noqa: BLE001 - ImportError, or torchvision's RuntimeError
        reason = (f"timm / segmentation_models_pytorch not importable here ({type(err).__name__}: "
                  f"{str(err).splitlines()[0] if str(err) else ''}); `make test-timm` runs these in .venv-timm")
        if os.environ.get("SEGNEXT_REQUIRE_TIMM"):
            raise RuntimeError(f"SEGNEXT_REQUIRE_TIMM is set but {reason}") from err
        pytest.skip(reason, allow_module_level=True)
