"""Resumable training runs, diffusers style: `checkpoint-N` folders, `--resume_from_checkpoint`.

A checkpoint holds everything the next step depends on: the trained weights, the optimiser's
moments, the gradient scaler, every random stream (the run's own generators and the global
torch / numpy / python states), the step, the epoch and the log so far. It is one safetensors
file with its JSON metadata inside (`rrnet.training_state`), in a folder that appears by one
rename, so a run killed at any moment leaves only complete checkpoints, and resuming from one
ends with the same weights, bit for bit, as a run that was never interrupted.

Ctrl-C (or SIGTERM) does not kill a run mid-step: the step finishes, a checkpoint is written
and `TrainingInterrupted` says how to resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rrnet.atomic import atomic_write_folder, atomic_write_text, recover_folder, remove_leftovers
from rrnet.errors import CheckpointError, RRNetError
from rrnet.interruption import TrainingInterrupted
from rrnet.training_state import load_state, save_state

CHECKPOINT_PREFIX = "checkpoint-"
STATE_NAME = "training_state"
LOG_NAME = "train_log.jsonl"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


@dataclass
class Checkpointing:
    """`every`: write a checkpoint each that many optimiser steps (None: only on Ctrl-C);
    `resume_from`: "latest" or a checkpoint folder to continue from; `overwrite`: start afresh in
    a folder that holds a finished result or another run's checkpoints."""

    every: int | None = None
    resume_from: str | Path | None = None
    overwrite: bool = True

    def __post_init__(self) -> None:
        if self.every is not None and (isinstance(self.every, bool) or self.every < 1):
            raise RRNetError(f"checkpointing steps must be a positive number of steps, got {self.every!r}")


# ---------------------------------------------------------------------------------------------
# Checkpoint folders
# ---------------------------------------------------------------------------------------------


def checkpoint_folders(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete `checkpoint-N` folders of a run, by step. A swap that a kill left half done is
    finished first (callers hold the folder's lock, so no other writer is mid-swap)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    for entry in list(output_dir.iterdir()):
        if entry.name.startswith(".") and entry.name.endswith((".complete", ".old")):
            target = entry.name[1:].rsplit(".", 1)[0]
            if _CHECKPOINT_RE.match(target):
                recover_folder(output_dir / target)
    found = []
    for entry in output_dir.iterdir():
        match = _CHECKPOINT_RE.match(entry.name)
        if match and (entry / f"{STATE_NAME}.safetensors").is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    folders = checkpoint_folders(output_dir)
    return folders[-1][1] if folders else None


def resolve_checkpoint(output_dir: str | Path, resume_from: str | Path) -> Path:
    """The checkpoint folder `resume_from` names: "latest" in `output_dir`, or a path."""
    if str(resume_from) == "latest":
        found = latest_checkpoint(output_dir)
        if found is None:
            raise CheckpointError(f"{output_dir}: no {CHECKPOINT_PREFIX}N folder to resume from")
        return found
    path = Path(resume_from)
    if path.is_file() and path.name.startswith(STATE_NAME):
        path = path.parent
    if not (path / f"{STATE_NAME}.safetensors").is_file():
        raise CheckpointError(f"{path}: not a training checkpoint (no {STATE_NAME}.safetensors)")
    return path


def check_output_folder(output_dir: str | Path, finished: bool, checkpointing: Checkpointing, what: str) -> None:
    """Refuse to start a run that would clobber a result or another run's checkpoints.

    `finished`: the folder already holds a complete `what` (a rectifier, a baseline checkpoint).
    """
    output_dir = Path(output_dir)
    if checkpointing.resume_from is not None:
        resolve_checkpoint(output_dir, checkpointing.resume_from)
        return
    if checkpointing.overwrite:
        return
    if finished:
        raise RRNetError(f"{output_dir} already holds a trained {what}; pass --overwrite to replace it "
                         "or choose another --output_dir")
    latest = latest_checkpoint(output_dir)
    if latest is not None:
        raise RRNetError(f"{output_dir} holds checkpoints of an unfinished run (latest: {latest.name}); "
                         "continue it with --resume_from_checkpoint latest, or pass --overwrite to start again")


def clear_checkpoints(output_dir: str | Path) -> None:
    """Remove another run's checkpoints before a fresh run writes its own."""
    for _, folder in checkpoint_folders(output_dir):
        shutil.rmtree(folder)


# ---------------------------------------------------------------------------------------------
# The log
# ---------------------------------------------------------------------------------------------


class RunLog:
    """`train_log.jsonl`: started empty by a fresh run; on resume it holds the checkpoint's
    epochs (lines of epochs after the checkpoint are redone) and new lines are appended."""

    def __init__(self, output_dir: str | Path, history: Sequence[dict]) -> None:
        self.path = Path(output_dir) / LOG_NAME
        atomic_write_text(self.path, "".join(json.dumps(record) + "\n" for record in history))
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


# ---------------------------------------------------------------------------------------------
# Stop requests and random streams
# ---------------------------------------------------------------------------------------------


class StopFlag:
    requested: bool = False


@contextmanager
def stop_requests() -> Iterator[StopFlag]:
    """Turn the first Ctrl-C / SIGTERM into a request to stop after the current step.

    A second Ctrl-C interrupts at once. Outside the main thread signals cannot be caught, and
    the flag simply never rises.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def request(signum, frame) -> None:
        flag.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def training_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Global torch / numpy / python random streams seeded for one run, the caller's put back after.

    Anything inside training that draws from a global stream is reproducible (and saved in the
    checkpoints), and a library call leaves the caller's streams exactly as they were.
    """
    device = torch.device(device)
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def _python_state(state) -> list:
    return [state[0], list(state[1]), state[2]]


def _python_from(saved: list):
    return (saved[0], tuple(saved[1]), saved[2])


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"name": name, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _set_numpy_state(saved: dict) -> None:
    np.random.set_state((saved["name"], np.array(saved["keys"], dtype=np.uint32), saved["pos"], saved["has_gauss"],
                         saved["gauss"]))


def images_digest(paths: Sequence[str | Path]) -> str:
    """A content hash of some files (the exemplar images), so a checkpoint knows its data."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode() + b"\0")
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Writing and reading checkpoints
# ---------------------------------------------------------------------------------------------


class Checkpointer:
    """Saves and restores one run's complete state; decides when a checkpoint is due.

    `identity` is what a checkpoint must agree with to be resumed (settings, data, model);
    `modules` the trained weights; `generators` / `randoms` the run's own random streams.
    """

    def __init__(
        self,
        output_dir: str | Path | None,
        checkpointing: Checkpointing,
        identity: dict[str, Any],
        modules: dict[str, torch.nn.Module],
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        generators: dict[str, torch.Generator],
        randoms: dict[str, random.Random],
        stop: StopFlag | None = None,
    ) -> None:
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.checkpointing = checkpointing
        self.identity = json.loads(json.dumps(identity, default=str))
        self.modules, self.optimizer, self.scaler = modules, optimizer, scaler
        self.generators, self.randoms, self.stop = generators, randoms, stop
        if self.output_dir is None and checkpointing.every:
            raise RRNetError("checkpointing needs an output folder")

    def save(self, state: dict[str, Any]) -> Path:
        """Write `checkpoint-<step>/` (one rename) and return it."""
        assert self.output_dir is not None
        step = int(state["step"])
        meta = {
            "identity": self.identity,
            "loop": state,
            "scaler": self.scaler.state_dict(),
            "random": {name: _python_state(r.getstate()) for name, r in self.randoms.items()},
            "python_random": _python_state(random.getstate()),
            "numpy_random": _numpy_state(),
        }
        tensors = {f"generator.{name}": g.get_state() for name, g in self.generators.items()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            tensors["cuda"] = torch.cuda.get_rng_state()
        folder = self.output_dir / f"{CHECKPOINT_PREFIX}{step}"
        atomic_write_folder(folder, lambda tmp: save_state(tmp / STATE_NAME, self.modules, self.optimizer, step,
                                                           extra=meta, tensors=tensors))
        return folder

    def load(self, folder: str | Path) -> dict[str, Any]:
        """Restore every part of the run from `folder`; returns the loop state saved with it."""
        folder = Path(folder)
        meta = load_state(folder / STATE_NAME, self.modules, self.optimizer)
        try:
            extra, tensors = meta["extra"], meta["tensors"]
            self._check_identity(folder, extra["identity"])
            for name, generator in self.generators.items():
                generator.set_state(tensors[f"generator.{name}"])
            for name, stream in self.randoms.items():
                stream.setstate(_python_from(extra["random"][name]))
            random.setstate(_python_from(extra["python_random"]))
            _set_numpy_state(extra["numpy_random"])
            if "cuda" in tensors and torch.cuda.is_available():
                torch.cuda.set_rng_state(tensors["cuda"])
            if extra["scaler"]:
                self.scaler.load_state_dict(extra["scaler"])
            state = dict(extra["loop"])
            if int(state["step"]) != meta["step"]:
                raise ValueError("step mismatch")
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{folder}: damaged training checkpoint ({type(exc).__name__}: {exc})") from None
        return state

    def _check_identity(self, folder: Path, saved: dict[str, Any]) -> None:
        for key in sorted(set(saved) | set(self.identity)):
            old, new = saved.get(key), self.identity.get(key)
            if old != new:
                if isinstance(old, dict) and isinstance(new, dict):
                    differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                    key = f"{key}.{differ[0]}" if differ else key
                    old, new = (old.get(differ[0]), new.get(differ[0])) if differ else (old, new)
                raise CheckpointError(f"{folder}: made with {key} = {old!r}, this run has {new!r}; resume with the "
                                      "same settings and data, or start again with --overwrite")

    def after_step(self, state: dict[str, Any]) -> None:
        """Call after each optimiser step: writes a checkpoint when one is due, and on a stop
        request writes one (unless this step's is written) and raises TrainingInterrupted."""
        every = self.checkpointing.every
        saved = None
        if every and self.output_dir is not None and state["step"] % every == 0:
            saved = self.save(state)
        if self.stop is not None and self.stop.requested:
            if self.output_dir is None:
                raise KeyboardInterrupt
            raise TrainingInterrupted(saved or self.save(state), int(state["step"]))


def start_output(
    output_dir: str | Path,
    checkpointing: Checkpointing,
    finished: bool,
    discard: Callable[[], None],
    what: str,
) -> Path | None:
    """Prepare the output folder of a run; returns the checkpoint folder to resume from, if any.

    A finished result is discarded first (`discard` removes its completeness marker first), so
    the folder never shows an old result beside a new log; a fresh run also removes old
    checkpoints, which belong to another run.
    """
    output_dir = Path(output_dir)
    check_output_folder(output_dir, finished, checkpointing, what)
    resume = None
    if checkpointing.resume_from is not None:
        resume = resolve_checkpoint(output_dir, checkpointing.resume_from)
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(output_dir)
    discard()
    if resume is None:
        clear_checkpoints(output_dir)
    elif not os.access(resume, os.R_OK):
        raise CheckpointError(f"{resume}: not readable")
    return resume
