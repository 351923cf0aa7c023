"""``import segnext_hub`` stays light: neither timm nor torch (evidence: a fresh interpreter's
``sys.modules``); only ``import segnext_hub.timm`` brings timm in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_segnext_hub_imports_neither_timm_nor_torch():
    code = ("import sys, json, segnext_hub; "
            "print(json.dumps(sorted(m for m in ('timm', 'torch', 'torchvision') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
