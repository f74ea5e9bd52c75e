"""Atomic file writes: write to a temporary sibling, then rename, so no reader sees half a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call `write(tmp_path)` for a temp file next to `path`, then `os.replace` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically (UTF-8)."""
    return atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


def atomic_write_folder(target: str | Path, save: Callable[[Path], object]) -> Path:
    """Call `save(tmp_dir)` on a temporary sibling folder, then swap it in for `target`:
    a reader sees the old folder or the complete new one, never a half-written model."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        save(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; give it the usual permissions
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
