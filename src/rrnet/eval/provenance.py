"""Content fingerprints of what produced an image: the model and the checkpoint (weights + config).

The evaluation cache keys every image folder by these, not by paths: a rectifier retrained in
place has the same path and new content, and its old images must not be reported as its own.
Small files (configs, rectifiers, learned tokens, LoRA weights) are hashed in full. Files over
`FULL_HASH_LIMIT` (a model's UNet, a tuned text encoder) are fingerprinted by size, modification
time and the hash of their first and last MiB, so a multi-GB model is not read at every run;
any rewrite of such a file changes its modification time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

FULL_HASH_LIMIT = 64 * 2**20
_EDGE = 2**20


def file_digest(path: str | Path) -> str:
    path = Path(path)
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if stat.st_size <= FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(2**20), b""):
                digest.update(block)
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
            digest.update(f.read(_EDGE))
            f.seek(-_EDGE, 2)
            digest.update(f.read(_EDGE))
    return digest.hexdigest()


def files_digest(root: str | Path, paths: Iterable[str | Path]) -> str:
    """One hash over several files, each named by its path relative to `root`."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        digest.update(name.encode() + b"\0" + file_digest(path).encode())
    return digest.hexdigest()[:16]


def folder_digest(folder: str | Path) -> str:
    """Every regular file under `folder` (hidden ones excepted)."""
    folder = Path(folder)
    files = [p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                    p.relative_to(folder).parts)]
    return files_digest(folder, files)


def model_digest(model: str) -> str:
    """A local model folder's content fingerprint; a hub id stands for itself."""
    path = Path(model).expanduser()
    if path.is_dir():
        return folder_digest(path)
    return model
