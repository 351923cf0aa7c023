"""The one rule that tells a registry name from a local path from an ``hf://`` repo.

Every command and function that takes "a name or a path" applies it (``segnext_hub.loading``
re-exports it); it lives here, free of torch, so that commands which only look things up
(``log``) answer without importing torch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..errors import BadInputError
from .registry import get_artifact

HF_SCHEME = "hf://"
_CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".pkl", ".bin", ".ckpt", ".pdparams")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """What a "name or path" argument designates: a registry ``name``, an ``hf`` repo
    (``name`` is ``org/repo[@rev]``) or a local ``path`` (file or folder)."""

    kind: str  # "registry" | "hf" | "path"
    name: str
    path: Optional[Path] = None


def resolve(name_or_path: Union[str, Path], *, note: bool = True) -> Source:
    """The one rule, documented in README ("Names and paths"):

    * ``hf://org/repo[@revision]`` is a Hugging Face repo;
    * a ``Path`` object, or text with a path separator, a leading ``.`` or ``~``, or a
      checkpoint suffix, is a local path (``./mscan-t`` is the folder named mscan-t);
    * any other text is a registry name (or alias), even where a file of that name exists,
      which is then mentioned on stderr, so a local folder never silently shadows a
      published model;
    * text that is no registry name but names an existing file or folder is that path;
      anything else is an unknown name, answered with "did you mean".

    ``note=False`` silences the stderr note (for a second look-up of the same argument).
    """
    if isinstance(name_or_path, Path):
        return _local(name_or_path)
    text = str(name_or_path).strip()
    if text.startswith(HF_SCHEME):
        return Source("hf", text[len(HF_SCHEME):])
    if (any(sep in text for sep in ("/", "\\")) or text.startswith((".", "~"))
            or text.lower().endswith(_CHECKPOINT_SUFFIXES)):
        return _local(Path(text))
    try:
        artifact = get_artifact(text)  # unknown names: one line with "did you mean"
    except BadInputError:
        if text and os.path.lexists(text):  # not a registry name: the local file it names
            return _local(Path(text))
        raise
    if note and os.path.lexists(text):
        logger.warning("%r is the registry artifact %s; write ./%s for the local path of that name",
                       text, artifact.name, text, extra={"cli_prefix": "note"})
    return Source("registry", artifact.name)


def _local(path: Path) -> Source:
    path = path.expanduser()
    if not path.exists():
        raise BadInputError(f"{path}: no such file or folder")
    return Source("path", str(path), path)
