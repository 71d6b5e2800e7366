"""write_atomically: the old file or the new one, never part of one; the umask's usual mode; nothing left on failure."""

import os
import stat

import pytest

from yolo_slim.files import remove_abandoned_partials, write_atomically, write_text_atomically, written_beside


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


def test_the_partial_files_of_a_killed_writer_are_removed_and_no_others(tmp_path):
    import subprocess
    import sys

    # A writer killed in the middle of writing (SIGKILL: no exception, no clean-up) leaves its temporary files.
    child = ("import os, signal, sys\n"
             "from yolo_slim.files import write_atomically, written_beside\n"
             "def die(file):\n"
             "    file.write(b'half a checkpoint')\n"
             "    os.kill(os.getpid(), signal.SIGKILL)\n"
             "with written_beside(sys.argv[1] + '/model.onnx') as partial:\n"
             "    partial.write_bytes(b'half an export')\n"
             "    write_atomically(sys.argv[1] + '/last.ckpt', die, binary=True)\n")
    killed = subprocess.run([sys.executable, "-c", child, str(tmp_path)], capture_output=True)
    assert killed.returncode == -9, killed.stderr
    left = sorted(path.name for path in tmp_path.iterdir())
    assert len(left) == 2 and all(name.startswith(".") and ".partial" in name for name in left)
    with written_beside(tmp_path / "other.onnx") as mine:  # this process's own write, still going on
        mine.write_bytes(b"mine")
        (tmp_path / ".hidden.partial.notes").write_text("not a temporary name of ours")
        removed = remove_abandoned_partials(tmp_path)
        assert sorted(path.name for path in removed) == left
        assert sorted(path.name for path in tmp_path.iterdir()) == sorted([mine.name, ".hidden.partial.notes"])
    assert (tmp_path / "other.onnx").read_bytes() == b"mine"
