"""Reading any SegNeXt checkpoint safely, mapping its keys, and proving the conversion.

Owns the checkpoint formats (zip, legacy, Jittor, safetensors) and the safe unpickler,
the key maps, layout detection, the official layout's reference tree, verification,
the writers, and the artifact's own record (MD_R, seed, classes read from its metadata).
May import models and the root helpers (errors, fileio, datasets); nothing above.
"""
