"""The seed an evaluation defaults to: the one the artifact was trained with, with its source.

SegNeXt's NMF draws random bases at every forward, so the seed moves mIoU; MMSeg's README
tells users to reuse the training seed. The model's config carries it when the artifact
recorded one (checkpoint meta, config.json, safetensors metadata); caches pulled before the
record was kept still have the training log beside the weights, which is read instead.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from ..conversion.log_header import record_from_log
from ..errors import SegnextHubError
from ..hub.entry import CacheEntry
from ..hub.registry import load_registry

logger = logging.getLogger(__name__)

NO_SEED = "no training seed recorded"


def recorded_seed(model: Any) -> tuple[Optional[int], str]:
    """``(seed, where it was read)`` for ``model``, or ``(None, NO_SEED)``.

    Args:
        model: a model from ``segnext_hub.load`` (anything with ``segnext_config``).

    Returns:
        The training seed and a phrase naming its source, for reports.
    """
    config = getattr(model, "segnext_config", None)
    if config is None:
        return None, NO_SEED
    if config.training_seed is not None:
        return config.training_seed, f"training seed, {config.training_seed_source or 'recorded'}"
    if not config.name or config.name not in load_registry():
        return None, NO_SEED
    try:
        entry = CacheEntry(config.name)
        manifest = entry.complete_manifest()
        log_file = manifest.log_file if manifest else None
        record = record_from_log(entry.path(log_file)) if log_file else None
    except (SegnextHubError, OSError) as err:  # an unreadable log only loses the default
        logger.info("%s: training log not read for its seed (%s)", config.name, err)
        return None, NO_SEED
    if record is None or record.seed is None:
        return None, NO_SEED
    return record.seed, f"training seed, {record.seed_source}"
