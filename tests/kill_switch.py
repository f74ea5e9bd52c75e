"""Run `rrnet` in a child process that SIGKILLs itself at an exact point of a write.

    python tests/kill_switch.py before|after|interrupt REGEX rrnet-arguments...

The child dies just before (or just after) the first `os.replace` whose destination file name
matches REGEX: the moment a kill hurts most (a rename half of a swap, the last file of a result).
A real SIGKILL, so nothing in the child gets to clean up. `interrupt` sends the child a SIGINT
(Ctrl-C) at that moment instead, and it carries on to handle it. Tests import `run_killed`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()


def child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.setdefault("RRNET_CACHE", str(HERE.parents[1] / ".cache" / "rrnet"))
    return env


def run_killed(when: str, pattern: str, *argv, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run `rrnet argv...` until it kills itself at the write `when`/`pattern` (or finishes)."""
    return subprocess.run([sys.executable, str(HERE), when, pattern, *map(str, argv)], capture_output=True, text=True,
                          env=child_env(), timeout=timeout)


def _main() -> int:
    when, pattern, argv = sys.argv[1], re.compile(sys.argv[2]), sys.argv[3:]
    original = os.replace
    sent: list[bool] = []

    def replace(src, dst, *args, **kwargs):
        hit = pattern.search(Path(dst).name) is not None
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(src, dst, *args, **kwargs)
        if hit and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        if hit and when == "interrupt" and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)
        return result

    os.replace = replace
    import torch

    torch.set_num_threads(1)
    from rrnet.cli import main

    return main(argv)


if __name__ == "__main__":
    sys.exit(_main())
