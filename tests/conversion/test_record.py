"""The artifact's own record (MD_R, seed, classes, palette) from checkpoint meta and logs.

Meta dicts are built the way the runners build them: mmcv 1.x ``save_checkpoint`` (MMSeg
0.x ``tools/train.py`` meta + runner meta + ``mmcv_version``/``time``) and MMEngine
``Runner.save_checkpoint`` (``meta`` with ``cfg``/``seed``/``dataset_meta`` and a
``message_hub`` state dict whose ``runtime_info`` holds ``cfg`` and ``seed``). Config text
and seeds come from the real logs in tests/data/logs (see SOURCES.md).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import pytest

from segnext_hub.conversion.config_text import DEFAULT_MD_R, md_r_from_config, seed_from_config
from segnext_hub.conversion.log_header import read_log_header, record_from_log
from segnext_hub.conversion.record import Record, by_precedence, merge, read_record
from segnext_hub.errors import BadInputError
from segnext_hub.tasks.logs import parse_log

LOGS = Path(__file__).resolve().parents[1] / "data" / "logs"

# decode_head of MMSeg 1.x configs/segnext/segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py
# (open-mmlab/mmsegmentation @ 3cb69d99e2870257ce7d79c4fde600cc58e62de0, Apache-2.0), as
# MMEngine's pretty_text prints the resolved config (B/L inherit it unchanged).
MMSEG1X_CFG = """model = dict(
    type='EncoderDecoder',
    decode_head=dict(
        type='LightHamHead',
        in_channels=[64, 160, 256],
        in_index=[1, 2, 3],
        channels=256,
        ham_channels=256,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        ham_kwargs=dict(
            MD_S=1,
            MD_R=16,
            train_steps=6,
            eval_steps=7,
            inv_t=100,
            rand_init=True)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
randomness = dict(seed=0)
"""
# What the official T/S configs print once the NMF has filled the dict (UPSTREAM.md section 7).
OFFICIAL_T_CFG = ("decode_head=dict(type='LightHamHead', ham_kwargs=dict(MD_R=16, SPATIAL=True, MD_S=1, "
                  "MD_D=512, TRAIN_STEPS=6, EVAL_STEPS=7, INV_T=100, ETA=0.9, RAND_INIT=True))")


def header(name: str) -> dict:
    """The first record of a real mmcv ``.log.json``: what train.py also put into meta."""
    return json.loads((LOGS / name).read_text().splitlines()[0])


def mmcv_meta(name: str) -> dict:
    """mmcv 1.x checkpoint meta: train.py's meta + checkpoint_config.meta + runner additions."""
    logged = header(name)
    return {"env_info": logged["env_info"], "seed": logged["seed"], "exp_name": logged["exp_name"],
            "mmseg_version": logged["mmseg_version"], "config": logged["config"],
            "CLASSES": tuple(logged.get("CLASSES") or ()), "PALETTE": logged.get("PALETTE"),
            "epoch": 65, "iter": 160000, "mmcv_version": "1.4.6", "time": "Wed Jun 14 21:54:40 2023",
            "hook_msgs": {"last_ckpt": "work_dirs/x/iter_160000.pth"}}


class Stub:
    """Stands in for the safe unpickler's placeholder of an unknown class."""


def mmengine_checkpoint(cfg: str = MMSEG1X_CFG, seed: int = 0) -> dict:
    dataset_meta = {"classes": ("wall", "building", "sky"),
                    "palette": [[120, 120, 120], [180, 120, 120], [6, 230, 230]],
                    "label_map": None, "reduce_zero_label": True}
    runtime_info = OrderedDict(cfg=cfg, seed=seed, experiment_name="segnext_20230209_172053",
                               mmengine_version="0.10.7", dataset_meta=dataset_meta, epoch=0, iter=160000,
                               max_iters=160000, last_ckpt="iter_160000.pth")
    return {
        "meta": {"cfg": cfg, "seed": seed, "experiment_name": "segnext_20230209_172053", "time": "20230211_101010",
                 "mmengine_version": "0.10.7", "dataset_meta": dataset_meta, "epoch": 0, "iter": 160000},
        "state_dict": OrderedDict(),
        "message_hub": {"log_scalars": OrderedDict({"train/loss": Stub()}), "runtime_info": runtime_info,
                        "resumed_keys": {"train/loss": True, "seed": True}},
        "optimizer": {"state": {}, "param_groups": []},
        "param_schedulers": [{"last_epoch": 160000}],
    }


# --------------------------------------------------------------------------- config readers


@pytest.mark.parametrize("config, want", [
    (OFFICIAL_T_CFG, (16, "ham_kwargs MD_R=16")),
    (MMSEG1X_CFG, (16, "ham_kwargs MD_R=16")),
    ("decode_head=dict(type='LightHamHead', ham_kwargs=dict(md_s=1, md_r=8))", (8, "ham_kwargs MD_R=8")),
    ('{"decode_head": {"type": "LightHamHead", "ham_kwargs": {"MD_R": 32, "MD_S": 1}}}', (32, "ham_kwargs MD_R=32")),
    ("decode_head=dict(type='LightHamHead', ham_kwargs=dict(MD_S=1, train_steps=6))", (64, None)),
    ("decode_head=dict(type='LightHamHead', ham_kwargs=None)", (64, None)),
    ("decode_head=dict(type='LightHamHead', channels=1024, ham_channels=1024)", (64, None)),
    ("ham_kwargs=dict(MD_S=1, MD_RANK=5, note='MD_R=3)')", (64, None)),  # neither MD_RANK nor text in a string
])
def test_md_r_from_config_text(config, want):
    found = md_r_from_config(config)
    assert found.value == want[0]
    assert found.note == (want[1] or f"LightHamHead without MD_R: code default {DEFAULT_MD_R}")


def test_md_r_from_real_log_configs():
    assert md_r_from_config(header("mmcv-1.4.6_segnext-b_celebamask.log.json")["config"]).value == 16
    assert md_r_from_config(header("mmcv-1.6.0_segnext-l_voc.log.json")["config"]).value == 64
    assert md_r_from_config(header("mmcv-1.7.0_deeplabv3plus_voc.log.json")["config"]) is None  # DeepLabV3+


@pytest.mark.parametrize("config", [
    "model = dict(type='EncoderDecoder', decode_head=dict(type='PSPHead'))", "", None, 16, Stub(), ["MD_R=16"],
    "decode_head=[dict(type='LightHamHead', ham_kwargs=dict(MD_R=16)),"
    " dict(type='LightHamHead', ham_kwargs=dict(MD_R=64))]",
])
def test_md_r_is_none_for_other_configs_and_conflicts(config):
    assert md_r_from_config(config) is None


def test_md_r_from_config_dict():
    """JSeg saves ``cfg.dump()`` as a nested dict; keys in either case."""
    seg = {"model": {"decode_head": {"type": "LightHamHead", "ham_kwargs": {"md_r": 16, "md_s": 1}}}}
    assert md_r_from_config(seg) == (16, "ham_kwargs MD_R=16")
    assert md_r_from_config({"model": {"decode_head": [{"type": "LightHamHead"}]}}).value == 64
    assert md_r_from_config({"model": {"decode_head": {"type": "UPerHead"}}}) is None
    odd = {"model": {"decode_head": {"type": "LightHamHead", "ham_kwargs": {"MD_R": True}}}}
    assert md_r_from_config(odd).value == 64  # a bool is not a rank
    loop: dict = {"type": "LightHamHead"}
    loop["self"] = loop
    assert md_r_from_config({"model": loop}).value == 64  # cycles end


def test_seed_from_config():
    real = header("mmcv-1.4.6_segnext-b_celebamask.log.json")["config"]
    assert seed_from_config(real) == (1769036558, "seed = 1769036558")
    assert seed_from_config(MMSEG1X_CFG) == (0, "randomness = dict(seed=0)")
    wrapped = "randomness = dict(seed=50000000,\n                  deterministic=False)"
    assert seed_from_config(wrapped).value == 50000000
    assert seed_from_config("randomness = dict(seed=None)") is None
    assert seed_from_config("sampler_seed=dict(type='DistSamplerSeedHook')") is None
    assert seed_from_config({"seed": 3}).value == 3 and seed_from_config({"randomness": {"seed": 4}}).value == 4
    assert seed_from_config({"seed": True}) is None and seed_from_config(None) is None


# --------------------------------------------------------------------------- checkpoints


def test_mmcv_checkpoint_meta():
    rec = read_record({"meta": mmcv_meta("mmcv-1.4.6_segnext-b_celebamask.log.json"), "state_dict": OrderedDict()})
    assert (rec.md_r, rec.md_r_source, rec.md_r_note) == (16, "checkpoint meta.config", "ham_kwargs MD_R=16")
    assert (rec.seed, rec.seed_source) == (1769036558, "checkpoint meta.seed")
    assert rec.classes[:3] == ("background", "skin", "nose") and len(rec.classes) == 19
    assert rec.classes_source == "checkpoint meta.CLASSES" and rec.palette_source == "checkpoint meta.PALETTE"
    assert len(rec.palette) == 19 and all(len(c) == 3 for c in rec.palette)
    assert rec.notes == ()  # meta.seed and the config's ``seed =`` line agree


def test_official_large_checkpoint_uses_the_code_default():
    rec = read_record({"meta": mmcv_meta("mmcv-1.6.0_segnext-l_voc.log.json")})
    assert (rec.md_r, rec.md_r_note) == (64, "LightHamHead without MD_R: code default 64")
    assert rec.seed == 1636082973 and rec.classes[0] == "background"


def test_mmengine_checkpoint():
    rec = read_record(mmengine_checkpoint())
    assert (rec.md_r, rec.md_r_source) == (16, "checkpoint meta.cfg")
    assert (rec.seed, rec.seed_source) == (0, "checkpoint meta.seed")
    assert rec.classes == ("wall", "building", "sky") and rec.classes_source == "checkpoint meta.dataset_meta"
    assert rec.palette[1] == (180, 120, 120) and rec.notes == ()


def test_message_hub_alone():
    ckpt = mmengine_checkpoint(seed=42)
    ckpt["meta"] = {"epoch": 0}  # meta stripped by a publishing tool, message_hub kept
    rec = read_record(ckpt)
    assert (rec.md_r, rec.md_r_source) == (16, "checkpoint message_hub.runtime_info.cfg")
    assert (rec.seed, rec.seed_source) == (42, "checkpoint message_hub.runtime_info.seed")
    assert rec.classes_source == "checkpoint message_hub.runtime_info.dataset_meta"
    assert any("randomness = dict(seed=0)" in note for note in rec.notes)  # cfg asked for 0, runner used 42


def test_jseg_dict_config():
    rec = read_record({"meta": {"config": {"model": {"decode_head": {"type": "LightHamHead"}}, "seed": 5}}})
    assert (rec.md_r, rec.md_r_source, rec.seed) == (64, "checkpoint meta.config", 5)
    assert rec.seed_source == "checkpoint meta.config (seed = 5)"


def test_disagreements_inside_one_checkpoint():
    meta = {"seed": 1, "config": OFFICIAL_T_CFG + "\nseed = 2\n", "cfg": MMSEG1X_CFG.replace("MD_R=16", "MD_R=64")}
    rec = read_record({"meta": meta})
    assert (rec.md_r, rec.seed) == (16, 1)
    assert ("md_r: checkpoint meta.cfg says 64, checkpoint meta.config says 16; "
            "using 16 (checkpoint meta.config)") in rec.notes
    assert any(note.startswith("seed: checkpoint meta.config (seed = 2) says 2") for note in rec.notes)


@pytest.mark.parametrize("ckpt", [
    None, [], "meta", Stub(), {"state_dict": {}}, {"meta": Stub()}, {"meta": None},
    {"meta": {"seed": Stub(), "config": Stub(), "CLASSES": ("a", Stub()), "PALETTE": [[1, 2]], "dataset_meta": Stub()}},
    {"meta": {"seed": True, "cfg": b"ham_kwargs=dict(MD_R=16)",
              "dataset_meta": {"classes": "ab", "palette": [[1, 2, 300]]}}},
    {"meta": {"seed": type("Int", (int,), {})(3)}, "message_hub": Stub()},
    {"meta": {}, "message_hub": {"runtime_info": [("seed", 1)]}},
])
def test_odd_values_are_ignored(ckpt):
    assert read_record(ckpt) == Record()


def test_hostile_mapping_does_not_escape():
    class Hostile(dict):
        def get(self, *args):
            raise RuntimeError("boom")

    assert read_record({"meta": Hostile(seed=1)}) == Record()


# --------------------------------------------------------------------------- training logs


def test_record_from_real_logs():
    rec = record_from_log(LOGS / "mmcv-1.4.6_segnext-b_celebamask.log.json")
    assert (rec.md_r, rec.md_r_source, rec.seed, rec.seed_source) == (
        16, "training log meta.config", 1769036558, "training log meta.seed")
    assert rec.classes[-1] == "cloth" and rec.classes_source == "training log meta.CLASSES"
    text = record_from_log(LOGS / "mmcv-1.4.6_segnext-b_celebamask.log")
    assert (text.md_r, text.md_r_source, text.seed) == (16, "training log config dump", 1769036558)
    engine = record_from_log(str(LOGS / "mmengine-0.5.0_pspnet_glomeruli.log"))
    assert (engine.md_r, engine.seed, engine.seed_source) == (None, 10, "training log environment block")
    assert engine.notes == ()  # ``seed: 10`` and ``randomness = dict(seed=10)`` agree
    assert record_from_log(LOGS / "mmengine-0.7.3_pspnet_watermelon.scalars.json") == Record()


def test_record_from_a_parsed_summary():
    summary = parse_log(LOGS / "mmcv-1.6.0_segnext-l_voc.log.json")
    rec = record_from_log(summary)
    assert (rec.md_r, rec.md_r_source, rec.seed, rec.seed_source) == (
        64, "training log meta.config", 1636082973, "training log meta.seed")
    assert rec.md_r_note == "LightHamHead without MD_R: code default 64"


def test_log_header_versions():
    head = read_log_header((LOGS / "mmcv-1.7.1_pspnet_glomeruli.log").read_text())
    assert head.version("mmcv") == "1.7.1" and head.version("mmseg") == "0.30.0+"
    assert head.seeds == ((514799972, "training log 'Set random seed to' line"),)
    assert read_log_header((LOGS / "mmengine-0.5.0_pspnet_glomeruli.log").read_text()).version("mmengine") == "0.5.0"


def test_record_from_missing_log():
    with pytest.raises(BadInputError, match="cannot read training log"):
        record_from_log(LOGS / "absent.log.json")


# --------------------------------------------------------------------------- precedence


def test_resolve_precedence_and_disagreements():
    checkpoint = read_record({"meta": mmcv_meta("mmcv-1.4.6_segnext-b_celebamask.log.json")})
    log = record_from_log(LOGS / "mmcv-1.6.0_segnext-l_voc.log.json")  # a different run: 64, other seed
    registry = Record.of("registry", md_r=64, classes=["background", "skin"])
    result = by_precedence(checkpoint=checkpoint, log=log, registry=registry)
    assert (result.record.md_r, result.record.md_r_source) == (16, "checkpoint meta.config")
    assert result.record.seed_source == "checkpoint meta.seed" and result.record.classes == checkpoint.classes
    assert ("md_r: training log meta.config says 64, checkpoint meta.config says 16; using 16 "
            "(checkpoint meta.config)") in result.disagreements
    assert any(line.startswith("md_r: registry says 64") for line in result.disagreements)
    assert any(line.startswith("seed: training log meta.seed says 1636082973") for line in result.disagreements)
    assert any(line.startswith("classes: registry says 2 classes (background, skin)") for line in result.disagreements)
    assert all("\n" not in line for line in result.disagreements)

    user = by_precedence(override=Record.of("user override", md_r=64, seed=0), checkpoint=checkpoint)
    assert (user.record.md_r, user.record.md_r_source, user.record.seed) == (64, "user override", 0)
    assert user.record.classes_source == "checkpoint meta.CLASSES"  # not overridden: next source
    assert len(user.disagreements) == 2


def test_merge_agreeing_and_missing_sources():
    same = merge([None, Record.of("a", md_r=16), Record(), Record.of("b", md_r=16, seed=3)])
    assert (same.record.md_r, same.record.md_r_source, same.record.seed, same.record.seed_source) == (16, "a", 3, "b")
    assert same.disagreements == ()
    assert by_precedence() == merge([])
    coloured = by_precedence(registry=Record.of("registry", palette=[[1, 2, 3]])).record
    assert json.loads(json.dumps(coloured.as_dict()))["palette"] == [[1, 2, 3]]


@pytest.mark.parametrize("kwargs", [dict(md_r=True), dict(seed="7"), dict(classes=[1, 2]), dict(palette=[[0, 0, 256]])])
def test_override_values_are_checked(kwargs):
    with pytest.raises(BadInputError, match="user override"):
        Record.of("user override", **kwargs)
