"""Atomic files: complete or absent, with ordinary permissions."""

from __future__ import annotations

import os

from libra_cli.io import atomic_write_text


def test_atomic_write_replaces_the_file_and_respects_the_umask(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    old_mask = os.umask(0o022)
    try:
        atomic_write_text(target, "new")
    finally:
        os.umask(old_mask)
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o644  # 0666 minus umask 022, not mkstemp's private 0600
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left behind
