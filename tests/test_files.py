"""write_atomically: the old file or the new one, never part of one; the umask's usual mode; nothing left on failure."""

import os
import stat

import pytest

from yolo_slim.files import write_atomically, write_text_atomically, written_beside


def test_a_write_that_fails_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "summary.json"
    write_text_atomically(path, "old\n")

    def fails_half_way(file):
        file.write("new, cut sh")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, fails_half_way)
    assert path.read_text() == "old\n"
    assert [entry.name for entry in tmp_path.iterdir()] == ["summary.json"]


def test_the_file_gets_the_umask_mode_not_a_private_one(tmp_path):
    previous = os.umask(0o022)
    try:
        write_atomically(tmp_path / "last.ckpt", lambda file: file.write(b"\0\1"), binary=True)
    finally:
        os.umask(previous)
    assert (tmp_path / "last.ckpt").read_bytes() == b"\0\1"
    assert stat.S_IMODE((tmp_path / "last.ckpt").stat().st_mode) == 0o644  # tempfile.mkstemp would give 0600


def test_written_beside_renames_when_done_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "best.onnx"
    with written_beside(path) as partial:
        assert partial.parent == tmp_path and partial.suffix == ".onnx" and partial != path
        partial.write_bytes(b"first")
    assert path.read_bytes() == b"first"
    with pytest.raises(ValueError, match="parity check failed"):
        with written_beside(path) as partial:
            partial.write_bytes(b"broken")
            raise ValueError("parity check failed")
    assert path.read_bytes() == b"first" and [entry.name for entry in tmp_path.iterdir()] == ["best.onnx"]
