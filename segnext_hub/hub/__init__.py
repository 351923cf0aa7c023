"""Published artifacts: the registry, downloads, the cache, ``pull``, and the Hugging Face read side.

Owns the registry (data/registry.yaml), the download engine, the cache layout and its
manifests, the config.json schema, and ``hf://`` downloads. May import conversion, models
and the root helpers. The modules that only read the registry or the cache import no
torch, so the commands built on them answer at once.
"""
