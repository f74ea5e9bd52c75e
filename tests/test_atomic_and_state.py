"""Writes that survive a kill: the folder swap at every step, and training checkpoints that are
either complete or refused with one line."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from rrnet.atomic import atomic_write_folder, recover_folder, remove_leftovers
from rrnet.errors import CheckpointError
from rrnet.training_state import load_state, save_state

from kill_switch import child_env


def _folder(path, text):
    path.mkdir(parents=True)
    (path / "a.txt").write_text(text)
    (path / "b.txt").write_text(text)


def _read(path):
    return {p.name: p.read_text() for p in path.iterdir()}


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# The swap: new folder -> .X.complete, X -> .X.old, .X.complete -> X, .X.old deleted. A kill after
# each step leaves one of these states; recovery (at the next write) must end with the new folder.
@pytest.mark.parametrize("state", ["complete_and_target", "complete_and_old", "target_and_old", "only_old"])
def test_recover_finishes_a_half_done_swap(tmp_path, state):
    target, complete, old = tmp_path / "x", tmp_path / ".x.complete", tmp_path / ".x.old"
    if state == "complete_and_target":
        _folder(target, "old"), _folder(complete, "new")
    elif state == "complete_and_old":
        _folder(old, "old"), _folder(complete, "new")
    elif state == "target_and_old":
        _folder(target, "new"), _folder(old, "old")
    else:  # a swap never leaves this, but a lone old folder must not be lost
        _folder(old, "old")
    recover_folder(target)
    expected = "old" if state == "only_old" else "new"
    assert _read(target) == {"a.txt": expected, "b.txt": expected} and _leftovers(tmp_path) == []


KILL_DURING_SWAP = """
import os, signal, sys
from pathlib import Path
from rrnet.atomic import atomic_write_folder
when, n, target = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
original, calls = os.replace, [0]
def replace(src, dst):
    calls[0] += 1
    if when == "before" and calls[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    original(src, dst)
    if when == "after" and calls[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
def save(tmp):
    for name in ("a.txt", "b.txt"):
        (tmp / name).write_text("new")
atomic_write_folder(target, save)
"""


@pytest.mark.parametrize(("when", "n"), [("before", 1), ("before", 2), ("before", 3), ("after", 3)])
def test_sigkill_at_each_rename_leaves_old_or_new(tmp_path, when, n):
    target = tmp_path / "x"
    _folder(target, "old")
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SWAP, when, str(n), str(target)], env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    recover_folder(target)
    remove_leftovers(tmp_path)
    assert _read(target) in ({"a.txt": "old", "b.txt": "old"}, {"a.txt": "new", "b.txt": "new"})
    assert _leftovers(tmp_path) == []
    atomic_write_folder(target, lambda tmp: (tmp / "a.txt").write_text("next"))
    assert _read(target) == {"a.txt": "next"} and _leftovers(tmp_path) == []


def test_a_failed_save_leaves_the_old_folder(tmp_path):
    target = tmp_path / "x"
    _folder(target, "old")

    def save(tmp):
        (tmp / "a.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write_folder(target, save)
    assert _read(target) == {"a.txt": "old", "b.txt": "old"} and _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Training checkpoints: weights and step travel together; anything damaged is a CheckpointError
# ---------------------------------------------------------------------------------------------


def _state(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    save_state(tmp_path / "s", {"m": model}, opt, 7, extra={"k": 1}, tensors={"gen": torch.Generator().get_state()})
    return model, opt


def _fresh():
    model = torch.nn.Linear(3, 2)
    return model, torch.optim.AdamW(model.parameters(), lr=0.1)


def test_state_round_trip_with_extra_tensors_from_the_file_alone(tmp_path):
    model, _ = _state(tmp_path)
    (tmp_path / "s.json").unlink()  # the metadata travels inside the safetensors file
    other, opt = _fresh()
    meta = load_state(tmp_path / "s", {"m": other}, opt)
    assert meta["step"] == 7 and meta["extra"] == {"k": 1} and set(meta["tensors"]) == {"gen"}
    assert torch.equal(other.weight, model.weight)


def _rewrite_without(path, key):
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != key}
        metadata = f.metadata()
    save_file(tensors, path, metadata=metadata)


@pytest.mark.parametrize("damage", ["missing", "zero_bytes", "truncated", "pickle", "no_rng", "no_weights",
                                    "no_metadata", "wrong_module"])
def test_damaged_state_is_a_checkpoint_error(tmp_path, damage):
    _state(tmp_path)
    path = tmp_path / "s.safetensors"
    modules = {"m": _fresh()[0]}
    if damage == "missing":
        path.unlink()
    elif damage == "zero_bytes":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-50])
    elif damage == "pickle":
        path.write_bytes(pickle.dumps({"step": 7}))
    elif damage == "no_rng":
        _rewrite_without(path, "rng.torch")
    elif damage == "no_weights":
        _rewrite_without(path, "module.m.weight")
    elif damage == "no_metadata":
        save_file({"rng.torch": torch.get_rng_state()}, path)
        (tmp_path / "s.json").unlink()
    else:
        modules = {"m": torch.nn.Linear(5, 2)}
    with pytest.raises(CheckpointError) as raised:
        load_state(tmp_path / "s", modules, _fresh()[1])
    assert "\n" not in str(raised.value)


def test_pickle_is_never_unpickled(tmp_path, monkeypatch):
    """A pickle renamed to .safetensors must be refused without running a single opcode of it."""
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    (tmp_path / "s.safetensors").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError):
        load_state(tmp_path / "s", {"m": _fresh()[0]})
    assert not marker.exists()
