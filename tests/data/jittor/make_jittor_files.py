"""Write small, REAL Jittor checkpoint files (made with ``jt.save``) for the safe Jittor reader's tests.

Run it with a real Jittor (it imports jittor; the project itself never does), e.g.::

    nvcc_path="" use_mkl=0 /work/scratch/jt/bin/python tests/data/jittor/make_jittor_files.py     # jittor 1.3.11.0
    nvcc_path="" use_mkl=0 /work/scratch/jt137/bin/python tests/data/jittor/make_jittor_files.py  # jittor 1.3.7.16

What it writes depends on the Jittor that runs it (see README.md beside it):

* Jittor >= 1.3.9 (jt.save no longer converts Vars, commit e260f2b6, Dec 2023): ``var_state.pkl`` and
  ``runner_checkpoint.pkl``; every Var is pickled through ``Var.__reduce__``.
* Jittor < 1.3.8.6 (jt.save converts every Var to a numpy array first): ``numpy_state.pkl`` and
  ``runner_checkpoint_numpy.pkl`` - the same values, in the pre-2023 form.

Each run also merges its files' entries into ``expected.json`` (dtype, shape, sha256 of the raw
little-endian C-order bytes and, for small arrays, the values; the non-array parts of the runner
checkpoint; the pickle globals each file asks for).  The values come from a fixed seed, so both runs
write identical arrays.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import sys
import time

import numpy as np

import jittor as jt
from jittor import nn, optim

HERE = os.path.dirname(os.path.abspath(__file__))
EXPECTED = os.path.join(HERE, "expected.json")
SEED = 20231205  # the day of Jittor commit e260f2b6


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".")[:4])


JT_VERSION = jt.__version__
# jt.save stopped converting Vars to numpy in e260f2b6 (first released in 1.3.9.x). Between 1018e3b2
# (1.3.8.6) and e4272cdd (1.3.9.0) its conversion helper called an undefined `dfs`, so a release from
# that window is not used here at all.
NEW_FORM = _version_tuple(JT_VERSION) >= (1, 3, 9)
if not NEW_FORM and _version_tuple(JT_VERSION) >= (1, 3, 8, 6):
    sys.exit(f"jittor {JT_VERSION}: use < 1.3.8.6 (old form) or >= 1.3.9 (new form)")


# --------------------------------------------------------------------------------------------------
# (a) a plain dict of Vars with SegNeXt (official MSCAN / LightHamHead) key names
# --------------------------------------------------------------------------------------------------
def var_state_arrays() -> dict[str, tuple[np.ndarray, str]]:
    """key -> (numpy value, jittor dtype used to make the Var)."""
    rng = np.random.default_rng(SEED)
    out: dict[str, tuple[np.ndarray, str]] = {}
    out["backbone.patch_embed1.proj.0.weight"] = (
        (rng.standard_normal((16, 3, 3, 3)) * 0.1).astype(np.float32), "float32")
    out["backbone.patch_embed1.proj.0.bias"] = (
        (rng.standard_normal(16) * 0.01).astype(np.float32), "float32")
    out["backbone.patch_embed1.proj.1.running_var"] = (
        rng.uniform(0.5, 2.0, 16).astype(np.float32), "float32")
    out["backbone.block1.0.layer_scale_1"] = (
        (0.01 + rng.standard_normal(32) * 1e-3).astype(np.float32), "float32")
    out["backbone.block1.0.attn.spatial_gating_unit.conv0.weight"] = (
        (rng.standard_normal((32, 1, 5, 5)) * 0.05).astype(np.float32), "float32")
    out["decode_head.conv_seg.bias"] = (
        (rng.standard_normal(150) * 0.1).astype(np.float16), "float16")
    # int64 Vars need an explicit dtype: jt.array(int64 ndarray) silently makes int32
    # (jt.flags.auto_convert_64_to_32 == 1). One value does not fit in 32 bits.
    out["extra.int64_counts"] = (np.array([0, 2**40 + 7, -5], dtype=np.int64), "int64")
    out["extra.int32_index"] = (np.array([3, -1, 2**31 - 1, 0], dtype=np.int32), "int32")
    out["extra.bool_mask"] = (np.array([[True, False, True], [False, False, True]]), "bool")
    # Jittor has no 0-d Vars: a 0-d array becomes shape (1,) (see expected.json).
    out["extra.scalar_from_0d"] = (np.array(0.25, dtype=np.float32), "float32")
    return out


def to_var(value: np.ndarray, dtype: str):
    return jt.array(value, dtype=dtype)


def var_state():
    d = {k: to_var(v, dt) for k, (v, dt) in var_state_arrays().items()}
    if NEW_FORM and hasattr(jt, "bfloat16"):
        # bfloat16: Var.data is a uint16 view, so the pickle holds uint16 (the dtype is lost)
        bf = jt.array(np.array([1.0, -2.5, 0.15625, 3.0e38], dtype=np.float32)).bfloat16()
        d["extra.bfloat16_weight"] = bf
    return d


# --------------------------------------------------------------------------------------------------
# (b) a container shaped like JSeg's Runner.save (python/jseg/runner/runner.py, Jittor/JSeg c14696d)
# --------------------------------------------------------------------------------------------------
# Config.dump() of project/segnext/tiny/segnext_tiny_512x512_ade_160k.py (with its _base_ files), as
# produced by JSeg's own jseg.config.config.Config at c14696d; plain dicts, lists and tuples. JSeg's
# configs have no 'seed' key.
JSEG_SEGNEXT_TINY_CONFIG = {
    'dataset_type': 'ADE20KDataset',
    'data_root': 'datasets/ADEChallengeData2016/',
    'img_norm_cfg': {'mean': [123.675, 116.28, 103.53], 'std': [58.395, 57.12, 57.375], 'to_rgb': True},
    'crop_size': (512, 512),
    'train_pipeline': [
        {'type': 'LoadImageFromFile'},
        {'type': 'LoadAnnotations', 'reduce_zero_label': True},
        {'type': 'Resize', 'img_scale': (2048, 512), 'ratio_range': (0.5, 2.0)},
        {'type': 'RandomCrop', 'crop_size': (512, 512), 'cat_max_ratio': 0.75},
        {'type': 'RandomFlip', 'prob': 0.5},
        {'type': 'PhotoMetricDistortion'},
        {'type': 'Normalize', 'mean': [123.675, 116.28, 103.53], 'std': [58.395, 57.12, 57.375], 'to_rgb': True},
        {'type': 'Pad', 'size': (512, 512), 'pad_val': 0, 'seg_pad_val': 255},
        {'type': 'DefaultFormatBundle'},
        {'type': 'Collect', 'keys': ['img', 'gt_semantic_seg']},
    ],
    'test_pipeline': [
        {'type': 'LoadImageFromFile'},
        {'type': 'MultiScaleFlipAug', 'img_scale': (2048, 512), 'flip': False, 'transforms': [
            {'type': 'Resize', 'keep_ratio': True},
            {'type': 'ResizeToMultiple', 'size_divisor': 32},
            {'type': 'RandomFlip'},
            {'type': 'Normalize', 'mean': [123.675, 116.28, 103.53], 'std': [58.395, 57.12, 57.375], 'to_rgb': True},
            {'type': 'ImageToTensor', 'keys': ['img']},
            {'type': 'Collect', 'keys': ['img']},
        ]},
    ],
    'dataset': {
        'train': {
            'type': 'ADE20KDataset', 'batch_size': 16, 'num_workers': 8, 'shuffle': True, 'drop_last': False,
            'data_root': 'datasets/ADEChallengeData2016/', 'img_dir': 'images/training',
            'ann_dir': 'annotations/training',
            'pipeline': [
                {'type': 'LoadImageFromFile'},
                {'type': 'LoadAnnotations', 'reduce_zero_label': True},
                {'type': 'Resize', 'img_scale': (2048, 512), 'ratio_range': (0.5, 2.0)},
                {'type': 'RandomCrop', 'crop_size': (512, 512), 'cat_max_ratio': 0.75},
                {'type': 'RandomFlip', 'prob': 0.5},
                {'type': 'PhotoMetricDistortion'},
                {'type': 'Normalize', 'mean': [123.675, 116.28, 103.53], 'std': [58.395, 57.12, 57.375],
                 'to_rgb': True},
                {'type': 'Pad', 'size': (512, 512), 'pad_val': 0, 'seg_pad_val': 255},
                {'type': 'DefaultFormatBundle'},
                {'type': 'Collect', 'keys': ['img', 'gt_semantic_seg']},
            ],
        },
        'val': {
            'type': 'ADE20KDataset', 'batch_size': 1, 'num_workers': 1, 'shuffle': False, 'drop_last': False,
            'data_root': 'datasets/ADEChallengeData2016/', 'img_dir': 'images/validation',
            'ann_dir': 'annotations/validation',
            'pipeline': [
                {'type': 'LoadImageFromFile'},
                {'type': 'MultiScaleFlipAug', 'img_scale': (2048, 512), 'flip': False, 'transforms': [
                    {'type': 'Resize', 'keep_ratio': True},
                    {'type': 'ResizeToMultiple', 'size_divisor': 32},
                    {'type': 'RandomFlip'},
                    {'type': 'Normalize', 'mean': [123.675, 116.28, 103.53], 'std': [58.395, 57.12, 57.375],
                     'to_rgb': True},
                    {'type': 'ImageToTensor', 'keys': ['img']},
                    {'type': 'Collect', 'keys': ['img']},
                ]},
            ],
        },
    },
    'logger': {'type': 'RunLogger'},
    'log_interval': 50,
    'norm_cfg': {'type': 'GN', 'num_groups': 32},
    'model': {
        'type': 'EncoderDecoder',
        'pretrained': 'jittorhub://mscan_t.pkl',
        'backbone': {'type': 'MSCAN', 'embed_dims': [32, 64, 160, 256], 'mlp_ratios': [8, 8, 4, 4],
                     'drop_rate': 0.0, 'drop_path_rate': 0.1, 'depths': [3, 3, 5, 2]},
        'decode_head': {
            'type': 'LightHamHead', 'in_channels': [64, 160, 256], 'in_index': [1, 2, 3], 'channels': 256,
            'dropout_ratio': 0.1, 'num_classes': 150, 'norm_cfg': {'type': 'GN', 'num_groups': 32},
            'align_corners': False,
            'loss_decode': {'type': 'CrossEntropyLoss', 'use_sigmoid': False, 'loss_weight': 1.0},
            'ham_channels': 256, 'ham_kwargs': {'MD_R': 16},
        },
        'train_cfg': {},
        'test_cfg': {'mode': 'whole'},
    },
    'parameter_groups_generator': {
        'type': 'CustomPrameterGroupsGenerator',
        'custom_keys': {'pos_block': {'decay_mult': 0.0}, 'norm': {'decay_mult': 0.0}, 'head': {'lr_mult': 10.0}},
    },
    'optimizer': {'type': 'CustomAdamW', 'lr': 6e-05, 'betas': (0.9, 0.999), 'weight_decay': 0.01},
    'max_iter': 160000,
    'eval_interval': 8000,
    'checkpoint_interval': 8000,
    'scheduler': {'type': 'PolyLR', 'warmup': 'linear', 'warmup_iters': 1500, 'warmup_ratio': 1e-06,
                  'max_steps': 160000, 'power': 1.0, 'min_lr': 0},
    'name': 'segnext_tiny_512x512_ade_160k',
    'work_dir': 'work_dirs/segnext_tiny_512x512_ade_160k',
}


# A cut-down model with the module layout of JSeg's MSCAN (python/jseg/models/backbones/mscan.py) and
# a decode head with a conv_seg, so that Module.state_dict() gives the real key names and Var kinds.
class StemConv(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, out_channels // 2, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)),
            nn.BatchNorm2d(out_channels // 2),
            nn.GELU(),
            nn.Conv2d(out_channels // 2, out_channels, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)),
            nn.BatchNorm2d(out_channels),
        )


class SpatialAttention(nn.Module):
    def __init__(self, d_model):
        super().__init__()
        self.proj_1 = nn.Conv2d(d_model, d_model, 1)


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim)
        layer_scale_init_value = 1e-2
        self.layer_scale_1 = layer_scale_init_value * jt.ones((dim))
        self.layer_scale_2 = layer_scale_init_value * jt.ones((dim))


class TinyMSCAN(nn.Module):
    def __init__(self, dim=32):
        super().__init__()
        self.patch_embed1 = StemConv(3, dim)
        self.block1 = nn.ModuleList([Block(dim)])
        self.norm1 = nn.LayerNorm(dim)


class TinyHead(nn.Module):
    def __init__(self, channels=16, num_classes=150):
        super().__init__()
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)


class TinyEncoderDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = TinyMSCAN()
        self.decode_head = TinyHead()


def tiny_model():
    model = TinyEncoderDecoder()
    rng = np.random.default_rng(SEED + 1)
    values = {}
    for k, v in model.state_dict().items():
        shape = tuple(v.shape)
        if k.endswith("running_var"):
            a = rng.uniform(0.5, 2.0, shape)
        elif k.endswith("layer_scale_1") or k.endswith("layer_scale_2"):
            a = 0.01 + rng.standard_normal(shape) * 1e-3
        else:
            a = rng.standard_normal(shape) * 0.05
        values[k] = a.astype(np.float32)
    model.load_parameters(values)
    return model


# JSeg's optimizer mixin and scheduler (python/jseg/optims/optimizer.py, lr_scheduler.py, c14696d),
# copied so that the 'optimizer' and 'scheduler' entries are what JSeg really stores.
class JSegOptimizerMixin(object):
    def parameters(self):
        data = {}
        for k, d in self.__dict__.items():
            if k == "param_groups":
                continue
            data[k] = d
        return data


class CustomAdamW(optim.AdamW, JSegOptimizerMixin):
    def __init__(self, params, lr, eps=1e-8, betas=(0.9, 0.999), weight_decay=0):
        super(CustomAdamW, self).__init__(params, lr, eps, betas, weight_decay)


def CustomPrameterGroupsGenerator(named_params, model, custom_keys={}, logger=None):
    def get_custom_parameter_groups(name):
        for ck in custom_keys.keys():
            if ck in name:
                return custom_keys[ck]
        return None

    normal_group_list = []
    custom_group_list = []
    for name, param in named_params:
        custom_group = get_custom_parameter_groups(name)
        if custom_group is not None:
            tmp = {'params': [param]}
            for i in custom_group.keys():
                tmp[i] = custom_group.get(i)
            custom_group_list.append(tmp)
            continue
        normal_group_list.append({'params': [param]})
    return normal_group_list + custom_group_list


class WarmUpLR(object):
    def __init__(self, optimizer, warmup_ratio=1.0 / 3, warmup_iters=500, warmup=None):
        self.optimizer = optimizer
        self.warmup_ratio = warmup_ratio
        self.warmup_iters = warmup_iters
        self.warmup = warmup
        self.base_lr = optimizer.lr
        self.base_lr_pg = [pg.get("lr", optimizer.lr) for pg in optimizer.param_groups]
        self.step(0, 0)

    def get_warmup_lr(self, lr, cur_iters):
        if self.warmup == 'constant':
            k = self.warmup_ratio
        elif self.warmup == 'linear':
            k = 1 - (1 - cur_iters / self.warmup_iters) * (1 - self.warmup_ratio)
        elif self.warmup == 'exp':
            k = self.warmup_ratio**(1 - cur_iters / self.warmup_iters)
        return k * self.get_lr(lr, cur_iters)

    def get_lr(self, lr, steps):
        return lr

    def _update_lr(self, steps, get_lr_func):
        self.optimizer.lr = get_lr_func(self.base_lr, steps)
        for i, param_group in enumerate(self.optimizer.param_groups):
            param_group["lr"] = get_lr_func(self.base_lr_pg[i], steps)

    def step(self, iters, epochs, by_epoch=True):
        if self.warmup is not None:
            if iters >= self.warmup_iters:
                if by_epoch:
                    self._update_lr(epochs, self.get_lr)
                else:
                    self._update_lr(iters, self.get_lr)
            else:
                self._update_lr(iters, self.get_warmup_lr)
        else:
            if by_epoch:
                self._update_lr(epochs, self.get_lr)
            else:
                self._update_lr(iters, self.get_lr)

    def parameters(self):
        return {key: value for key, value in self.__dict__.items() if key != 'optimizer'}


class PolyLR(WarmUpLR):
    def __init__(self, max_steps, power=1., min_lr=0., **kwargs):
        self.power = power
        self.min_lr = min_lr
        self.max_steps = max_steps
        super(PolyLR, self).__init__(**kwargs)

    def get_lr(self, base_lr, steps):
        coeff = (1 - steps / self.max_steps)**self.power
        return (base_lr - self.min_lr) * coeff + self.min_lr


RUNNER_ITER = 8000  # the first checkpoint_interval of the config
SAVE_TIME = time.asctime((2024, 7, 16, 10, 0, 0, 1, 198, -1))  # JSeg's current_time() format, fixed


def runner_checkpoint():
    cfg = JSEG_SEGNEXT_TINY_CONFIG
    model = tiny_model()
    params = CustomPrameterGroupsGenerator(model.named_parameters(), model,
                                           **{k: v for k, v in cfg['parameter_groups_generator'].items()
                                              if k != 'type'})
    opt_cfg = {k: v for k, v in cfg['optimizer'].items() if k != 'type'}
    optimizer = CustomAdamW(params=params, **opt_cfg)
    sch_cfg = {k: v for k, v in cfg['scheduler'].items() if k != 'type'}
    scheduler = PolyLR(optimizer=optimizer, **sch_cfg)
    # Runner.train: optimizer.step(loss) (n_step += 1), scheduler.step(self.iter, ...), self.iter += 1,
    # then save() when iter % checkpoint_interval == 0. No training step is run here (that would compile
    # the whole backward pass); n_step is set to what 8000 steps leave.
    optimizer.n_step = RUNNER_ITER
    scheduler.step(RUNNER_ITER - 1, 0, by_epoch=False)
    return {
        "meta": {
            "jseg_version": '0.1.0.0',
            "epoch": 0,
            "iter": RUNNER_ITER,
            "max_iter": cfg['max_iter'],
            "max_epoch": None,
            "save_time": SAVE_TIME,
            "config": cfg,
        },
        "model": model.state_dict(),
        "scheduler": scheduler.parameters(),
        "optimizer": optimizer.parameters(),
    }


# --------------------------------------------------------------------------------------------------
# expected.json
# --------------------------------------------------------------------------------------------------
def array_info(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    le = a.astype(a.dtype.newbyteorder("<"), copy=False)
    info = {"dtype": str(a.dtype), "shape": list(a.shape),
            "sha256": hashlib.sha256(le.tobytes()).hexdigest()}
    if a.size <= 16:
        info["values"] = a.tolist()
    return info


def as_numpy(x):
    if isinstance(x, jt.Var):
        return x.data.copy()
    return x


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (jt.Var, np.ndarray)):
        return {"__array__": array_info(as_numpy(x))}
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return repr(x)
    return x


class _GlobalRecorder(pickle.Unpickler):
    """Records the globals a pickle asks for; rebuilds a jittor Var as the bare numpy array it wraps
    (what the safe reader must do), so the arrays can be checked without jittor's own load."""

    def __init__(self, f):
        super().__init__(f)
        self.seen: list[list[str]] = []

    def find_class(self, module, name):
        if [module, name] not in self.seen:
            self.seen.append([module, name])
        if (module, name) == ("jittor", "jittor_core.Var"):
            return _inert_var
        return super().find_class(module, name)


def _inert_var(array):
    assert isinstance(array, np.ndarray)
    return array


def check_and_describe(path: str) -> dict:
    raw = open(path, "rb").read()
    assert raw.endswith(b"HCAJSLHD"), path
    body, digest = raw[:-28], raw[-28:-8]
    assert hashlib.sha1(body).digest() == digest, path
    assert body[:2] == b"\x80\x04", "protocol 4"
    rec = _GlobalRecorder(io.BytesIO(body))
    obj = rec.load()
    return obj, {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest(), "pickle_bytes": len(body),
                 "pickle_globals": rec.seen}


def main():
    print(f"jittor {JT_VERSION}, numpy {np.__version__}, python {sys.version.split()[0]}")
    made = {}
    env = {"jittor_version": JT_VERSION, "numpy_version": np.__version__,
           "python_version": sys.version.split()[0]}

    state = var_state()
    state_np = {k: as_numpy(v) for k, v in state.items()}  # before jt.save: the old one converts in place
    ckpt = runner_checkpoint()
    ckpt_json = {"meta": jsonable(ckpt["meta"]),
                 "model": {k: array_info(as_numpy(v)) for k, v in ckpt["model"].items()},
                 "scheduler": jsonable(ckpt["scheduler"]),
                 "optimizer": jsonable(ckpt["optimizer"])}

    if NEW_FORM:
        names = {"state": "var_state.pkl", "ckpt": "runner_checkpoint.pkl"}
        form = "jittor Vars pickled through Var.__reduce__ (jittor >= 1.3.9)"
    else:
        names = {"state": "numpy_state.pkl", "ckpt": "runner_checkpoint_numpy.pkl"}
        form = "numpy arrays: jt.save converted every Var in dicts/lists first (jittor < 1.3.8.6)"

    p = os.path.join(HERE, names["state"])
    jt.save(state, p)
    inert, desc = check_and_describe(p)
    made[names["state"]] = {**env, "form": form, "made_by": "jt.save(dict_of_vars, path)", **desc,
                            "arrays": {k: array_info(v) for k, v in state_np.items()}}
    assert {k: array_info(v) for k, v in inert.items()} == made[names["state"]]["arrays"]
    p = os.path.join(HERE, names["ckpt"])
    jt.save(ckpt, p)
    inert, desc = check_and_describe(p)
    made[names["ckpt"]] = {**env, "form": form,
                           "made_by": "jt.save({'meta','model','scheduler','optimizer'}, path) as JSeg Runner.save",
                           **desc, **ckpt_json}
    assert {k: array_info(v) for k, v in inert["model"].items()} == ckpt_json["model"]
    assert jsonable({k: inert[k] for k in ("meta", "scheduler", "optimizer")}) == \
        {k: ckpt_json[k] for k in ("meta", "scheduler", "optimizer")}

    # round trip through the real jt.load; note where jittor itself changes what the file holds
    for name in made:
        got = jt.load(os.path.join(HERE, name))
        arrays = made[name].get("arrays") or made[name]["model"]
        src = got if "arrays" in made[name] else got["model"]
        kinds = sorted({type(v).__module__ + "." + type(v).__qualname__ for v in src.values()})
        made[name]["jt_load_value_types"] = kinds
        changed = {}
        for k, info in arrays.items():
            a = as_numpy(src[k])
            if array_info(a) != info:
                changed[k] = array_info(a)
        if changed:
            made[name]["jt_load_changes"] = changed
        print(f"{name}: {os.path.getsize(os.path.join(HERE, name))} bytes, jt.load gives {kinds}, "
              f"changed by jt.load: {changed}")

    expected = {}
    if os.path.exists(EXPECTED):
        with open(EXPECTED) as f:
            expected = json.load(f)
    expected.setdefault("about", "Written by make_jittor_files.py; see README.md. sha256 = of the array's raw "
                                 "little-endian C-order bytes. JSON has no tuples: tuples in the pickles "
                                 "(e.g. crop_size, betas) appear here as lists.")
    expected.setdefault("files", {}).update(made)
    expected["files"] = dict(sorted(expected["files"].items()))
    with open(EXPECTED, "w") as f:
        json.dump(expected, f, indent=1, sort_keys=False)
        f.write("\n")


if __name__ == "__main__":
    main()
