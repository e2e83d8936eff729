"""Atomic files: complete or absent, with ordinary permissions."""

from __future__ import annotations

import os

import pytest

from libra_cli.errors import LibraError
from libra_cli.io import atomic_write_text, read_json


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


def test_read_json_names_the_file_and_the_problem_in_one_line(tmp_path):
    path = tmp_path / "x.json"
    with pytest.raises(LibraError, match=rf"^{path}: detections file not found$"):
        read_json(path, "detections file")
    path.write_text('{"a": [1, 2')
    with pytest.raises(LibraError) as error:
        read_json(path)
    # json reports the end of the text: line 1 (the file has no newline).
    assert str(error.value).startswith(f"{path}: not valid JSON (") and "at line 1)" in str(error.value)
    path.write_text("[1, 2]")
    assert read_json(path) == [1, 2]
    with pytest.raises(LibraError, match=rf"^{path}: expected a JSON object, got list$"):
        read_json(path, expected=dict)
