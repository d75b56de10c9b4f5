"""calico_cni.files.replace_file: the one way a file others read is replaced."""

from __future__ import annotations

import os
import stat

import pytest

from calico_cni.files import replace_file


def test_replaces_whole_with_its_mode_and_creates_the_directory(tmp_path):
    path = tmp_path / "new" / "mtu"
    replace_file(str(path), "1450\n")
    assert path.read_text() == "1450\n" and stat.S_IMODE(path.stat().st_mode) == 0o644
    inode = path.stat().st_ino
    replace_file(str(path), "1430\n", 0o755)
    assert path.read_text() == "1430\n" and stat.S_IMODE(path.stat().st_mode) == 0o755
    assert path.stat().st_ino != inode, "renamed into place, not rewritten where a reader may be"
    assert os.listdir(path.parent) == ["mtu"]


def test_a_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "mtu"
    path.write_text("1450\n")
    os.mkdir(tmp_path / "dir")
    with pytest.raises(OSError):
        replace_file(str(tmp_path / "dir"), "x")  # renaming a file over a directory fails
    assert sorted(os.listdir(tmp_path)) == ["dir", "mtu"] and path.read_text() == "1450\n"
