"""The packaged artifact registry: every published file named, consistent and loadable."""

from __future__ import annotations

import importlib.resources
import re

import pytest
import yaml

from segnext_hub.errors import BadInputError
from segnext_hub.hub.registry import (
    expected_param_count,
    expected_shapes,
    get_artifact,
    list_artifacts,
    load_registry,
)

VARIANTS = "tsbl"
SIZE_WORD = {"t": "tiny", "s": "small", "b": "base", "l": "large"}
MMSEG_BASE = "https://download.openmmlab.com/mmsegmentation/v0.5/"
JITTOR_BASE = "https://cg.cs.tsinghua.edu.cn/jittor/assets/build/checkpoints/"
PARAMS_150 = {"t": 4_263_414, "s": 13_932_886, "b": 27_636_310, "l": 48_926_550}


def expected_names() -> set[str]:
    names = set()
    for v in VARIANTS:
        names |= {f"mscan-{v}", f"mscan-{v}-in1k"}
        names |= {f"mscan-{v}-{d}-official" for d in ("ade20k", "cityscapes", "in1k")}
        names |= {f"mscan-{v}-{d}-jittor" for d in ("ade20k", "cityscapes", "isaid", "in1k")}
        names |= {f"mscan-{v}-{d}-paddle" for d in ("cityscapes", "in1k")}
    return names


def packaged_document() -> dict:
    text = importlib.resources.files("segnext_hub").joinpath("data/registry.yaml").read_text()
    return yaml.safe_load(text)


def test_every_published_artifact_is_named_exactly_once():
    names = [a.name for a in list_artifacts()]
    assert len(names) == 44 == len(set(names))
    assert set(names) == expected_names()


def test_registry_is_cached_and_read_only():
    first = load_registry()
    assert load_registry() is first
    with pytest.raises(TypeError):
        first["mscan-t"] = first["mscan-s"]  # type: ignore[index]


@pytest.mark.parametrize("v", VARIANTS)
def test_mmseg_ade20k_urls_follow_the_published_pattern(v):
    art = get_artifact(f"mscan-{v}")
    stem = f"segnext_mscan-{v}_1x16_512x512_adamw_160k_ade20k"
    match = re.fullmatch(
        re.escape(f"{MMSEG_BASE}segnext/{stem}/{stem}_") + r"(\d{8}_\d{6})-([0-9a-f]{8})\.pth", art.url
    )
    assert match, art.url
    stamp, digest = match.groups()
    assert art.log_url == f"{MMSEG_BASE}segnext/{stem}/{stem}_{stamp}.log.json"
    assert art.filename == art.url.rsplit("/", 1)[1]
    assert art.hash_prefix == digest
    assert (art.kind, art.dataset, art.num_classes, art.layout) == ("segmentor", "ade20k", 150, "mmseg")


@pytest.mark.parametrize("v", VARIANTS)
def test_mmseg_backbone_urls_follow_the_published_pattern(v):
    art = get_artifact(f"mscan-{v}-in1k")
    match = re.fullmatch(
        re.escape(f"{MMSEG_BASE}pretrain/segnext/mscan_{v}_20230227-") + r"([0-9a-f]{8})\.pth", art.url
    )
    assert match, art.url
    assert art.filename == art.url.rsplit("/", 1)[1]
    assert art.hash_prefix == match.group(1)
    assert (art.kind, art.num_classes, art.md_r, art.test_mode) == ("backbone", None, None, None)


def test_hash_prefix_only_where_the_file_name_carries_one():
    for art in list_artifacts():
        suffix = re.search(r"-([0-9a-f]{8})\.pth$", art.filename)
        assert art.hash_prefix == (suffix.group(1) if suffix else None), art.name
        assert art.sha256 is None and art.size is None, f"{art.name}: values must not be invented"


def test_file_names_come_from_the_registry_and_are_unique():
    arts = list_artifacts()
    assert len({a.filename for a in arts}) == len(arts)
    for art in arts:
        if art.layout == "official":
            assert art.url.startswith("https://cloud.tsinghua.edu.cn/")
            assert art.filename.endswith(".pth") and art.filename not in art.url
        if art.layout == "jittor":
            assert art.url == JITTOR_BASE + art.filename and art.filename.endswith(".pkl")


def test_only_the_constructed_folder_share_links_are_unverified():
    unverified = {a.name for a in list_artifacts() if not a.url_verified}
    assert unverified == {f"mscan-{v}-in1k-official" for v in VARIANTS}
    assert "files/?p=%2Fmscan_t.pth&dl=1" in get_artifact("mscan-t-in1k-official").url


def test_md_r_values_and_their_status():
    for v in VARIANTS:
        official = 16 if v in "ts" else 64
        assert get_artifact(f"mscan-{v}-ade20k-official").md_r == official
        assert get_artifact(f"mscan-{v}-cityscapes-jittor").md_r == official
        mmseg = get_artifact(f"mscan-{v}")
        assert mmseg.md_r == 16
        assert mmseg.md_r_settled is (v in "ts")
    assert "UNSETTLED" in get_artifact("mscan-l").md_r_source


def test_test_modes_per_dataset():
    for art in list_artifacts():
        if art.dataset == "cityscapes" and art.layout == "paddle":
            # PaddleSeg evaluates the whole 2048x1024 image (its configs set no test_config).
            assert (art.test_mode, art.test_crop_size, art.resize_scale) == ("whole", None, (2048, 1024))
        elif art.dataset == "cityscapes":
            assert (art.test_mode, art.test_crop_size, art.test_stride, art.resize_scale) == (
                "slide", (1024, 1024), (768, 768), (2048, 1024))
        elif art.dataset == "ade20k":
            assert (art.test_mode, art.resize_scale) == ("whole", (2048, 512))
        elif art.dataset == "isaid":
            assert (art.test_mode, art.resize_scale, art.num_classes) == ("whole", (896, 896), 16)


def test_reported_metrics():
    assert get_artifact("mscan-l").metrics.miou == 50.99
    assert get_artifact("mscan-l").metrics.fps == 22.91
    assert get_artifact("mscan-b-cityscapes-official").metrics.miou_ms == 83.8
    assert get_artifact("mscan-s-isaid-jittor").metrics.miou == 68.8
    assert get_artifact("mscan-t-cityscapes-paddle").metrics.miou == 81.04
    assert get_artifact("mscan-l-cityscapes-paddle").metrics.miou_ms == 83.6


def test_paddle_entries_carry_their_head_width_and_licence():
    """PaddleSeg's configs build every size 256 wide with MD_R 16 (configs/segnext/*.yml)."""
    for v in VARIANTS:
        seg, backbone = get_artifact(f"mscan-{v}-cityscapes-paddle"), get_artifact(f"mscan-{v}-in1k-paddle")
        assert (seg.ham_channels, seg.md_r, seg.num_classes, seg.layout) == (256, 16, 19, "paddle")
        assert backbone.ham_channels is None and backbone.url.endswith(f"mscan_{v}_imagenet_pretrained.zip")
        assert seg.log_url == seg.url.replace("model.pdparams", "train.log")
        assert "Apache-2.0" in seg.license and seg.sha256 is None
    assert get_artifact("segnext-b-cityscapes-paddle").name == "mscan-b-cityscapes-paddle"
    with pytest.raises(BadInputError, match="mscan-l-in1k-official, mscan-l-in1k-jittor, mscan-l-in1k-paddle"):
        get_artifact("mscan_l_imagenet_pretrained.zip")  # PaddleSeg's file name names no source


@pytest.mark.parametrize("name", ["MSCAN-T", " mscan_t_ade20k_official "])
def test_names_are_case_and_separator_insensitive(name):
    assert get_artifact(name).name in {"mscan-t", "mscan-t-ade20k-official"}


def test_unknown_name_suggests_close_matches_in_one_line():
    with pytest.raises(BadInputError) as info:
        get_artifact("mscan-t-ade20k")
    message = str(info.value)
    assert "\n" not in message
    assert "'mscan-t-ade20k'" in message and "mscan-t-ade20k-official" in message
    with pytest.raises(BadInputError, match="no close match"):
        get_artifact("resnet50")


@pytest.mark.parametrize("v", VARIANTS)
def test_param_counts_of_150_class_segmentors(v):
    for name in (f"mscan-{v}", f"mscan-{v}-ade20k-official", f"mscan-{v}-ade20k-jittor"):
        assert expected_param_count(get_artifact(name)) == PARAMS_150[v]


def test_param_counts_follow_num_classes_and_kind():
    t150 = expected_param_count(get_artifact("mscan-t"))
    # conv_seg is 1x1 from 256 channels (+bias) for T: 257 parameters per class.
    assert expected_param_count(get_artifact("mscan-t-cityscapes-official")) == t150 - 131 * 257
    backbone = expected_param_count(get_artifact("mscan-l-in1k"))
    assert backbone == expected_param_count(get_artifact("mscan-l-in1k-jittor"))
    assert 40_000_000 < backbone < PARAMS_150["l"]
    shapes = expected_shapes(get_artifact("mscan-t-isaid-jittor"))
    assert shapes["decode_head.conv_seg.weight"] == (16, 256, 1, 1)
    assert not any(k.startswith("backbone.") for k in expected_shapes(get_artifact("mscan-t-in1k")))


# --------------------------------------------------------------------------- broken files


def _mutate(doc: dict, how: str) -> dict:
    entries = doc["artifacts"]
    if how == "unknown_field":
        entries[2]["sha265"] = None
    elif how == "missing_field":
        del entries[2]["md_r_source"]
    elif how == "duplicate_name":
        entries[5]["name"] = entries[2]["name"]
    elif how == "bad_variant":
        entries[2]["variant"] = "xl"
    elif how == "hash_mismatch":
        entries[2]["hash_prefix"] = "deadbeef"
    elif how == "slide_without_crop":
        entries[2]["test_mode"] = "slide"
    elif how == "backbone_with_classes":
        entries[4]["num_classes"] = 1000
    return doc


BROKEN = {
    "unknown_field": r"entry 3 \('mscan-b'\): unknown field\(s\) 'sha265'",
    "missing_field": r"entry 3 \('mscan-b'\): missing field\(s\) 'md_r_source'",
    "duplicate_name": r"entry 6 \('mscan-b'\): duplicate name 'mscan-b'",
    "bad_variant": r"entry 3 \('mscan-b'\): variant 'xl' is not one of t, s, b, l",
    "hash_mismatch": r"entry 3 \('mscan-b'\): hash_prefix 'deadbeef' does not match",
    "slide_without_crop": r"entry 3 \('mscan-b'\): test_mode 'slide' needs test_crop_size",
    "backbone_with_classes": r"entry 5 \('mscan-t-in1k'\): a backbone has no head: num_classes",
}


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_broken_registry_is_rejected_naming_the_entry(tmp_path, how):
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(_mutate(packaged_document(), how), sort_keys=False))
    with pytest.raises(BadInputError, match=BROKEN[how]) as info:
        load_registry(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_unmodified_copy_loads(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(packaged_document(), sort_keys=False))
    assert list(load_registry(path)) == [a.name for a in list_artifacts()]


@pytest.mark.parametrize("text, message", [
    ("schema_version: 1\nartifacts: [\n", "not valid YAML"),
    ("schema_version: 1\nschema_version: 1\nartifacts: []\n", "duplicate key 'schema_version' at line 2"),
    ("schema_version: 2\nartifacts: [{}]\n", "schema_version 2 is not supported"),
    ("- just a list\n", "exactly 'schema_version' and 'artifacts'"),
])
def test_malformed_registry_files(tmp_path, text, message):
    path = tmp_path / "registry.yaml"
    path.write_text(text)
    with pytest.raises(BadInputError, match=re.escape(message)):
        load_registry(path)


def test_missing_registry_file(tmp_path):
    with pytest.raises(BadInputError, match="cannot read registry"):
        load_registry(tmp_path / "nope.yaml")
