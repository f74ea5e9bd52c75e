"""Atomic file writes: write to a temporary sibling, then rename, so no reader sees half a file."""

from __future__ import annotations

import os
import re
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


def _swap_names(target: Path) -> tuple[Path, Path]:
    return target.parent / f".{target.name}.complete", target.parent / f".{target.name}.old"


def recover_folder(target: str | Path) -> None:
    """Finish or undo a folder swap that a killed process left half done.

    The swap is: complete new folder renamed to `.NAME.complete`, old folder renamed to
    `.NAME.old`, `.NAME.complete` renamed to NAME, `.NAME.old` deleted. Whatever step a kill
    interrupted, a complete folder survives and this puts it at NAME.
    """
    target = Path(target)
    complete, old = _swap_names(target)
    if complete.exists():
        if target.exists() and not old.exists():
            os.replace(target, old)
        os.replace(complete, target)
    if old.exists():
        if target.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, target)


def atomic_write_folder(target: str | Path, save: Callable[[Path], object]) -> Path:
    """Call `save(tmp_dir)` on a temporary sibling folder, then swap it in for `target`: a reader
    sees the old folder or the complete new one, and a kill at any point leaves one of them
    (`recover_folder`, run at the next write, puts it back in place)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(target)
    complete, old = _swap_names(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        save(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; give it the usual permissions
        os.replace(tmp, complete)
        if target.exists():
            os.replace(target, old)
        os.replace(complete, target)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# the names `atomic_write` / `atomic_write_folder` give their temporaries: ".NAME-" + 8 random
# characters (+ the file's suffix)
_TEMPORARY = re.compile(r"^\..+-[a-z0-9_]{8}(\.[A-Za-z0-9]+)?$")


def remove_leftovers(folder: str | Path, of: str | None = None) -> list[Path]:
    """Delete temporaries that killed writers left in `folder` (hidden, never read as complete);
    with `of`, only those of the entry named `of` (for a folder shared with other files).

    Only for a folder whose writers are known to be stopped: the caller holds its lock.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if of is not None and not entry.name.startswith(f".{of}-"):
            continue
        if _TEMPORARY.match(entry.name) and not entry.name.endswith((".complete", ".old", ".lock")):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
