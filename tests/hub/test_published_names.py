"""Every published file name resolves to its own registry artifact (issue 20, point 3).

Evidence: the packaged registry's own URLs (as upstream publishes them) are the input; the
expected answer is the entry that URL belongs to. No network.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from segnext_hub.errors import BadInputError
from segnext_hub.hub.names import resolve
from segnext_hub.hub.registry import get_artifact, list_artifacts

ARTIFACTS = list_artifacts()


def _url_file(url: str) -> str:
    parts = urlsplit(url)
    query = parse_qs(parts.query).get("p")
    return PurePosixPath(unquote(query[0]) if query else unquote(parts.path)).name


def test_the_registry_has_at_least_the_36_entries_of_issue_20():
    assert len(ARTIFACTS) >= 36


@pytest.mark.parametrize("art", ARTIFACTS, ids=lambda a: a.name)
def test_each_published_file_name_resolves_to_its_own_artifact(art):
    """The URL's file name (the registry file name where a share link carries none), with its
    suffix and, where no other artifact shares it, without."""
    url_file = _url_file(art.url)
    file_name = url_file if "." in url_file else art.filename
    if file_name.startswith("model."):  # PaddleSeg: every model is model.pdparams; its folder names it
        file_name = PurePosixPath(urlsplit(art.url).path).parent.name + ".pdparams"
        assert get_artifact(file_name[: -len(".pdparams")]).name == art.name
    assert get_artifact(file_name).name == art.name
    stem = file_name.rsplit(".", 1)[0]
    shared = [a.name for a in ARTIFACTS if a is not art and stem in (_url_file(a.url).rsplit(".", 1)[0],
                                                                       a.filename.rsplit(".", 1)[0])]
    if not shared:
        assert get_artifact(stem).name == art.name
    else:  # mscan_t: the official .pth and JSeg's .pkl; the bare stem is the registry name mscan-t
        assert stem in {"mscan_t", "mscan_s", "mscan_b", "mscan_l"}
        assert get_artifact(stem).name == stem.replace("_", "-")
    assert get_artifact(art.filename).name == art.name


def test_the_imagenet_backbone_stem_is_not_the_ade20k_segmentor():
    assert get_artifact("mscan_b_20230227-3ab7d230").name == "mscan-b-in1k"
    assert get_artifact("segnext_mscan-t_1x16_512x512_adamw_160k_ade20k_20230210_140244-05bd8466").name == "mscan-t"
    assert get_artifact("segnext_tiny_512x512_ade_160k").name == "mscan-t-ade20k-jittor"


def test_a_missing_published_file_names_its_artifact(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInputError, match=r"^mscan_b_20230227-3ab7d230.pth: no such file or folder \(it is "
                                            r"the published file of mscan-b-in1k"):
        resolve("mscan_b_20230227-3ab7d230.pth")


def test_an_existing_file_with_a_published_name_is_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mscan_b_20230227-3ab7d230.pth").write_bytes(b"x")
    source = resolve("mscan_b_20230227-3ab7d230.pth")
    assert source.kind == "path" and source.path.name == "mscan_b_20230227-3ab7d230.pth"


def test_a_missing_log_file_is_no_such_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInputError, match=r"^run.log.json: no such file or folder$"):
        resolve("run.log.json")
