"""torch.hub entry points: ``torch.hub.load("<owner>/segnext-hub", "mscan_t", pretrained=True)``.

``pretrained=True`` pulls the published weights through segnext_hub (download, hash
check, verified conversion, cache) and returns the eval-mode model; ``False`` returns the
same architecture with random initialisation.
"""

dependencies = ["torch", "safetensors", "numpy", "requests", "yaml", "click", "huggingface_hub", "tqdm"]


def _entry(name: str, variant: str, backbone: bool = False):
    def build(pretrained: bool = False, **kwargs):
        import segnext_hub

        if pretrained:
            return segnext_hub.load(name, **kwargs)
        return segnext_hub.create_model(variant, backbone_only=backbone, **kwargs)

    build.__name__ = name.replace("-", "_")
    kind = "ImageNet-1K MSCAN backbone" if backbone else "SegNeXt segmentor, ADE20K (150 classes), MMSeg weights"
    build.__doc__ = f"SegNeXt-{variant.upper()}: {kind}. pretrained=True loads registry name '{name}'."
    return build


mscan_t = _entry("mscan-t", "t")
mscan_s = _entry("mscan-s", "s")
mscan_b = _entry("mscan-b", "b")
mscan_l = _entry("mscan-l", "l")
mscan_t_in1k = _entry("mscan-t-in1k", "t", backbone=True)
mscan_s_in1k = _entry("mscan-s-in1k", "s", backbone=True)
mscan_b_in1k = _entry("mscan-b-in1k", "b", backbone=True)
mscan_l_in1k = _entry("mscan-l-in1k", "l", backbone=True)
