"""Fixtures shared by the whole suite.

Every test runs without the user's settings (no SEGNEXT_HUB_* / HF_* variables, no proxies,
HOME and the caches under a temporary folder), and whatever a test changes in
``os.environ`` is undone after it, so no test sees another's environment.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest
import torch

from tests.helpers.http_server import LoopbackServer
from tests.helpers.mirror import Mirror

_USER_PREFIXES = ("SEGNEXT_HUB_", "HF_", "HUGGINGFACE_", "HUGGING_FACE_")
_PROXIES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(scope="session", autouse=True)
def _no_user_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        for var in list(os.environ):
            if var.upper().startswith(_USER_PREFIXES) or var.lower() in _PROXIES:
                mp.delenv(var)
        mp.setenv("HOME", str(home))
        mp.setenv("XDG_CACHE_HOME", str(home / ".cache"))
        mp.setenv("SEGNEXT_HUB_CACHE", str(home / "segnext-hub-cache"))
        mp.setenv("HF_HOME", str(home / "huggingface"))
        mp.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield


@pytest.fixture(autouse=True)
def isolated_environment() -> Iterator[None]:
    """Restore ``os.environ`` after each test, whatever the test or a library changed."""
    snapshot = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(snapshot)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny tensors: a second intra-op thread only adds synchronisation (badly so on a busy CPU)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def http_server() -> Iterator[LoopbackServer]:
    """A started LoopbackServer with no files; stopped after the test."""
    with LoopbackServer() as server:
        yield server


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Iterator[Mirror]:
    """A loopback mirror of the registry's URLs and an empty cache, wired through the environment."""
    monkeypatch.setenv("SEGNEXT_HUB_CACHE", str(tmp_path / "cache"))
    with LoopbackServer() as server:
        monkeypatch.setenv("SEGNEXT_HUB_MIRROR", server.base_url)
        yield Mirror(server)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """List the README/docs code blocks that tests/test_docs_snippets.py did not run, and why."""
    from tests.helpers.doc_snippets import NOT_RUN_KEY

    not_run = config.stash.get(NOT_RUN_KEY, None)
    if not not_run:
        return
    terminalreporter.section(f"docs code blocks not run: {len(not_run)}")
    for where, reason in sorted(not_run.items(), key=lambda item: (item[0].rsplit(":", 1)[0], int(item[0].rsplit(":", 1)[1]))):
        terminalreporter.line(f"{where}: {reason}")
