"""Runs inside the MMSegmentation 1.2.2 virtualenv; never imported by segnext_hub.

Usage: python mmseg_worker.py JOB.json. The job names a variant, a state_dict file,
input tensors and seeds; the worker builds MMSeg's model from the config the wheel ships,
loads the weights strictly, and writes the outputs to job["out"] with torch.save.
"""

from __future__ import annotations

import json
import os
import sys
import time
import types


class _MissingCompiledOps(types.ModuleType):
    """mmcv-lite has no compiled ``mmcv._ext``; SegNeXt calls none of its ops."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise RuntimeError(f"compiled mmcv op {name} is not available in mmcv-lite")

        return missing


sys.modules.setdefault("mmcv._ext", _MissingCompiledOps("mmcv._ext"))

import mmseg  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmseg.utils import register_all_modules  # noqa: E402

register_all_modules()


def config_path(variant: str) -> str:
    root = os.path.join(os.path.dirname(mmseg.__file__), ".mim", "configs", "segnext")
    return os.path.join(root, f"segnext_mscan-{variant}_1xb16-adamw-160k_ade20k-512x512.py")


def build_config(job: dict) -> Config:
    cfg = Config.fromfile(config_path(job["variant"]))
    cfg.model.backbone.init_cfg = None
    cfg.model.decode_head.num_classes = job.get("num_classes", 150)
    cfg.model.decode_head.ham_kwargs.MD_R = job["md_r"]
    return cfg


def build_model(cfg: Config):
    from mmseg.registry import MODELS

    return MODELS.build(cfg.model)


def build_training(cfg: Config, weights: str):
    """MMSeg's model in train mode with the given weights, and the config's optimiser
    wrapper (AdamW + paramwise_cfg) at its base lr (the schedule is checked on its own)."""
    import mmengine.optim.optimizer.default_constructor as constructor
    from mmengine.optim import build_optim_wrapper

    # The constructor probes mmcv._ext (for DCN lr multipliers) and chokes on the stand-in
    # module above; mmcv-lite has no compiled ops, which is the answer the probe wants.
    constructor.mmcv_full_available = lambda: False
    model = build_model(cfg)
    model.load_state_dict(torch.load(weights), strict=True)
    model.train()
    return model, build_optim_wrapper(model, cfg.optim_wrapper)


def data_samples(labels: "torch.Tensor") -> list:
    """(B, H, W) labels as the SegDataSamples MMSeg's loss reads."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    samples = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None])
        samples.append(sample)
    return samples


def train_step(cfg: Config, job: dict) -> dict:
    """One training iteration as MMSeg's runner does it: model.loss on a batch, the summed
    losses backwards, then one step of the optimiser wrapper."""
    model, wrapper = build_training(cfg, job["weights"])
    images, labels = torch.load(job["train_step"]["batch"])
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in wrapper.optimizer.param_groups for p in g["params"]}
    torch.manual_seed(job["train_step"]["seed"])
    losses = model.loss(images, data_samples(labels))
    loss, _ = model.parse_losses(losses)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    wrapper.step()
    return {"loss": loss.detach(), "loss_keys": sorted(losses), "grads": grads, "groups": groups,
            "params": {n: p.detach().clone() for n, p in model.named_parameters()},
            "buffers": {n: b.clone() for n, b in model.named_buffers() if not n.startswith("data_preprocessor.")},
            "rng_after": torch.rand(4)}


def schedule(cfg: Config, spec: dict) -> "torch.Tensor":
    """The lr of two groups (base lr and the head's x10) at every iteration of the config's
    param_scheduler, built and stepped as MMSeg's runner steps it (after each iteration)."""
    from mmengine.optim import OptimWrapper
    from mmseg.registry import PARAM_SCHEDULERS

    base = cfg.optim_wrapper.optimizer.lr
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.AdamW([{"params": [params[0]]}, {"params": [params[1]], "lr": base * 10.0}], lr=base)
    wrapper = OptimWrapper(optimizer)
    schedulers = [PARAM_SCHEDULERS.build(dict(c, optimizer=wrapper)) for c in cfg.param_scheduler]
    lrs = torch.empty(spec["iters"], 2, dtype=torch.float64)
    for i in range(spec["iters"]):
        lrs[i, 0], lrs[i, 1] = optimizer.param_groups[0]["lr"], optimizer.param_groups[1]["lr"]
        for scheduler in schedulers:
            scheduler.step()
    return lrs


def main() -> None:
    job = json.load(open(sys.argv[1]))
    torch.set_num_threads(job.get("threads", torch.get_num_threads()))
    cfg = build_config(job)
    out: dict = {}
    if job.get("predict_images"):
        from mmseg.apis import inference_model, init_model

        model = init_model(cfg, checkpoint=None, device="cpu")
        model.load_state_dict(torch.load(job["weights"]), strict=True)
        model.eval()
        preds = []
        for path in job["predict_images"]:
            rgb = np.load(path)
            torch.manual_seed(job["seed"])
            result = inference_model(model, np.ascontiguousarray(rgb[:, :, ::-1]))  # MMSeg wants BGR
            preds.append(result.pred_sem_seg.data[0].clone())
        out["predict"] = preds
    if job.get("inputs"):
        model = build_model(cfg)
        model.load_state_dict(torch.load(job["weights"]), strict=True)
        model.eval()
        outputs = []
        with torch.no_grad():
            for x in torch.load(job["inputs"]):
                feats = model.backbone(x)
                torch.manual_seed(job["seed"])
                logits = model(x, mode="tensor")
                outputs.append({"features": [f.clone() for f in feats], "logits": logits.clone()})
        out["forward"] = outputs
    if job.get("benchmark"):
        model = build_model(cfg)
        model.load_state_dict(torch.load(job["weights"]), strict=True)
        model.eval()
        x = torch.randn(job["benchmark"]["shape"])
        times = []
        with torch.no_grad():
            for i in range(job["benchmark"]["warmup"] + job["benchmark"]["repeats"]):
                torch.manual_seed(0)
                start = time.perf_counter()
                model(x, mode="tensor")
                if i >= job["benchmark"]["warmup"]:
                    times.append(time.perf_counter() - start)
        out["times"] = times
    if job.get("init_model"):
        from mmseg.apis import init_model

        spec = job["init_model"]
        times = []
        for _ in range(spec["repeats"]):
            start = time.perf_counter()
            model = init_model(cfg, checkpoint=spec["checkpoint"], device="cpu")
            times.append(time.perf_counter() - start)
        out["init_times"] = times
        out["dataset_meta"] = dict(model.dataset_meta)
        if spec.get("input"):
            torch.manual_seed(job.get("seed", 0))
            with torch.no_grad():
                out["logits"] = model(torch.load(spec["input"]), mode="tensor")
    if job.get("train_step"):
        out["train_step"] = train_step(cfg, job)
    if job.get("schedule"):
        out["schedule"] = schedule(cfg, job["schedule"])
    if job.get("cross_entropy"):
        from mmseg.models.losses import CrossEntropyLoss

        logits, labels = torch.load(job["cross_entropy"])
        out["cross_entropy"] = {flag: CrossEntropyLoss(avg_non_ignore=flag)(logits, labels, ignore_index=255)
                                for flag in (False, True)}
    if job.get("keys"):
        model = build_model(cfg)
        out["keys"] = {k: (tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()}
    torch.save(out, job["out"])


if __name__ == "__main__":
    main()
