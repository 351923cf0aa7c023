"""The one progress bar: tqdm on stderr, shown on a terminal unless asked otherwise.

Downloads (bytes), evaluation and prediction (images) all use it, so every bar looks and
behaves the same: never on stdout (which may carry JSON), never in logs or CI by default.
"""

from __future__ import annotations

import sys
from typing import Any, Optional


def progress_bar(total: Optional[int], desc: str, enabled: Optional[bool] = None, *, unit: str = "it",
                 initial: int = 0) -> Any:
    """A ``tqdm`` bar; ``enabled=None`` means "only when stderr is a terminal".

    ``unit="B"`` scales to KiB/MiB. A disabled bar is still a tqdm object (its calls are
    no-ops), so callers never branch on it. ``initial`` starts a resumed download part way.
    """
    from tqdm import tqdm  # lazy: fast commands never import it

    show = sys.stderr.isatty() if enabled is None else enabled
    scaled = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
    return tqdm(total=total, initial=initial, unit=unit, desc=desc, file=sys.stderr, disable=not show,
                leave=True, dynamic_ncols=True, **scaled)
