"""One writer per output folder: a lock file beside the folder, naming the process that holds it.

Two runs writing one folder (two `rrnet evaluate` with different settings, a train and its own
re-run) would mix their files. Each writing command holds `.NAME.lock` next to `NAME` for its
whole run; a second run refuses with one line naming the owner. The lock is an OS file lock
(`flock`), so the kernel drops it when its process dies, even by SIGKILL: a lock file left by a
dead run is stale and is simply taken over. The file sits beside the folder, not inside it, so
swapping the folder (`atomic_write_folder`) never moves the lock. Within one process the lock is
re-entrant: the command line takes it before its checks, and the library function it calls
takes it again.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rrnet.errors import RRNetError

try:
    import fcntl
except ImportError:  # Windows: exclusive creation plus a liveness check of the recorded pid
    fcntl = None

_held: dict[str, list] = {}  # lock path -> [file descriptor, depth]


def lock_path(folder: str | Path) -> Path:
    folder = Path(folder).absolute()
    return folder.parent / f".{folder.name}.lock"


def _owner(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _busy(folder: Path, path: Path) -> RRNetError:
    owner = _owner(path)
    who = f"pid {owner.get('pid', '?')}"
    if owner.get("host") and owner.get("host") != socket.gethostname():
        who += f" on {owner['host']}"
    since = f", since {owner['started']}" if owner.get("started") else ""
    command = f" ({owner['command']})" if owner.get("command") else ""
    return RRNetError(f"{folder} is in use by another rrnet run: {who}{command}{since}; "
                      "wait for it to finish or choose another --output_dir")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire(folder: Path, path: Path) -> int:
    while True:
        if fcntl is None:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = _owner(path)
                if owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid", 0) or 0)):
                    path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise _busy(folder, path) from None
            return fd
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise _busy(folder, path) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous owner removed the file between our open and lock: try again


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[Path]:
    """Hold the write lock of `folder` inside the block (re-entrant within a process)."""
    folder = Path(folder).absolute()
    path = lock_path(folder)
    key = str(path)
    if key in _held:
        _held[key][1] += 1
        try:
            yield path
        finally:
            _held[key][1] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(folder, path)
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
             "command": " ".join(["rrnet", *sys.argv[1:3]]) if sys.argv else "rrnet"}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(owner).encode())
    _held[key] = [fd, 1]
    try:
        yield path
    finally:
        del _held[key]
        try:
            path.unlink(missing_ok=True)  # removed while still locked, so no one else holds this file
        finally:
            os.close(fd)


def output_lock(output_dir: str | Path | None):
    """`folder_lock(output_dir)`, or nothing when a function writes no folder."""
    from contextlib import nullcontext

    return nullcontext() if output_dir is None else folder_lock(output_dir)
