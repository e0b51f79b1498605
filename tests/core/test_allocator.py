"""keep_freed_memory() reaches glibc's malloc, and can be undone."""
from __future__ import annotations

import platform

import pytest

from seethrough.allocator import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_thresholds_are_set_and_restored():
    try:
        assert keep_freed_memory() is True
    finally:
        assert keep_freed_memory(False) is True  # glibc's defaults back, memory trimmed


def test_the_cli_sets_it(monkeypatch):
    from seethrough import cli

    calls = []
    monkeypatch.setattr("seethrough.allocator.keep_freed_memory", lambda: calls.append(1))
    assert cli.main(["layers", "conceptnet"]) == 0
    assert calls == [1]
