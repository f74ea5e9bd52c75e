"""One writer per output folder: a second run refuses with one line; a dead owner's lock is stale."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from rrnet.cli import main
from rrnet.errors import RRNetError
from rrnet.locking import folder_lock, lock_path

from kill_switch import child_env

HOLD = "import sys, time\nfrom rrnet.locking import folder_lock\nwith folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n"


def _holder(folder):
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                             env=child_env())
    assert child.stdout.readline().strip() == "held"
    return child


def test_second_writer_refuses_and_a_dead_owner_is_stale(tiny_model_dir, relation_dir, tmp_path, capsys):
    out = tmp_path / "rect"
    argv = ["train", "--model", str(tiny_model_dir), "--data", str(relation_dir), "--output_dir", str(out),
            "--epochs", "1", "--hidden_size", "8", "--heads", "1", "--no_progress"]
    child = _holder(out)
    try:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "in use by another rrnet run" in err[0] and f"pid {child.pid}" in err[0]
        assert not out.exists()  # refused before anything was written
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert lock_path(out).is_file()  # the killed owner could not clean up ...
    assert main(argv) == 0  # ... but the kernel released its lock
    assert (out / "rectifier.safetensors").is_file() and not lock_path(out).exists()


def test_lock_is_reentrant_in_one_process_and_released(tmp_path):
    folder = tmp_path / "f"
    with folder_lock(folder) as path:
        with folder_lock(folder):
            assert path.is_file()
        assert path.is_file()
    assert not path.exists()


def test_library_lock_refuses_a_folder_another_process_holds(tmp_path):
    child = _holder(tmp_path / "eval")
    try:
        with pytest.raises(RRNetError, match="in use"):
            with folder_lock(tmp_path / "eval"):
                pass
    finally:
        child.kill()
        child.wait()


def test_exemplar_folder_has_one_writer(tmp_path):
    """Two runs writing the same world exemplar folder would race in the folder swap: the second is refused."""
    from rrnet.world.exemplars import write_relation_folder

    folder = tmp_path / "data" / "red_circle_above_blue_square"
    child = _holder(folder)
    try:
        with pytest.raises(RRNetError, match="in use"):
            write_relation_folder(tmp_path / "data", "red circle", "above", "blue square", n_images=1)
        assert not folder.exists()
    finally:
        child.kill()
        child.wait()
    assert write_relation_folder(tmp_path / "data", "red circle", "above", "blue square", n_images=1) == folder
    assert (folder / "index.json").is_file()
