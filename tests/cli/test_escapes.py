"""Strings read from files reach the terminal with control characters escaped (issue 19,
finding 10): a group member who edits a shared cache's manifest cannot clear the screen
or fake the "sha256 pinned, matched" line.

Evidence: a real pull over the loopback mirror, then the manifest edited as such a member
would, then the real CLI (click's runner) on it.
"""

from __future__ import annotations

import json

from click.testing import CliRunner

import segnext_hub
from segnext_hub.cli.common import shown
from segnext_hub.cli.hub import main as hub_cli
from segnext_hub.hub.cache import artifact_dir

CLEAR = "\x1b[2J\x1b[H"


def test_shown_escapes_every_control_and_bidi_character():
    assert shown("plain text, ünïcode") == "plain text, ünïcode"
    assert shown(f"{CLEAR}x\ny\r\t\x07\x7f\x9b\u202eevil\u2028") == "\\x1b[2J\\x1b[Hx\\ny\\r\\t\\x07\\x7f\\x9b\\u202eevil\\u2028"


def test_info_and_verify_show_manifest_strings_escaped(mirror):
    mirror.serve("mscan-t")
    segnext_hub.pull("mscan-t", progress=False)
    path = artifact_dir("mscan-t") / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["hash_status"] = f"{CLEAR}sha256 pinned, matched"
    manifest["record_disagreements"] = ["seed\x1b]0;owned\x07"]
    path.write_text(json.dumps(manifest))

    result = CliRunner().invoke(hub_cli, ["info", "mscan-t"])
    text = result.stdout + result.stderr
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2J\\x1b[Hsha256 pinned, matched" in text and "seed\\x1b]0;owned\\x07" in text

    manifest["files"][f"raw/{CLEAR}gone.pth"] = {"size": 1, "sha256": "0" * 64}
    path.write_text(json.dumps(manifest))
    for command in (["verify", "mscan-t"], ["info", "mscan-t"], ["path", "mscan-t"]):
        result = CliRunner().invoke(hub_cli, command)
        assert result.exit_code != 0 or command[0] == "info"
        text = result.stdout + result.stderr
        assert "\x1b" not in text and "raw/\\x1b[2J\\x1b[Hgone.pth" in text, command
