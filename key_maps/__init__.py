"""Declarative key maps (YAML), shipped inside the wheel as ``segnext_hub.key_maps``."""
