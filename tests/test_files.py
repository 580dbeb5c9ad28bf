"""Output files are readable as the umask allows, like any new file (not mkstemp's private 0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pipeline.run import atomic_write_bytes, write_files


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_written_files_get_the_mode_open_gives_a_new_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        (tmp_path / "plain.txt").write_bytes(b"x")  # what the user expects of a new file
        atomic_write_bytes(tmp_path / "one.png", b"png")
        write_files(tmp_path / "job", [("0.png", b"png"), ("result.json", b"{}")])
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert mode(tmp_path / "plain.txt") == expected
    assert mode(tmp_path / "one.png") == expected
    assert [mode(tmp_path / "job" / n) for n in ("0.png", "result.json")] == [expected, expected]
    assert (tmp_path / "job" / "0.png").read_bytes() == b"png" and not list(tmp_path.rglob("*.tmp"))
