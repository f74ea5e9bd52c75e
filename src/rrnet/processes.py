"""Several processes for one run, launched by `accelerate launch` or `torchrun`.

`rrnet evaluate` and `rrnet experiment` split their work (images to sample, images to judge,
models to train) between the processes of a launch with accelerate's `PartialState`, and the
main process gathers the results and alone writes the run's records (`results.json`, verdict
caches, reports) under the output folder's lock. A plain run (no launcher, or a launcher with
one process) creates no `PartialState` and no process group and works exactly as before.

Launch detection reads the environment a launcher sets (`WORLD_SIZE` and its MPI equivalents).
On a machine without GPUs `PartialState` must be told `cpu=True`, or every process believes it
is alone; `accelerate launch --cpu` (and `accelerate launch --num_processes N` without GPUs)
starts a single process whatever `--num_processes` says, which is reported here. Launches that
do start several CPU processes: `accelerate launch --multi_gpu --num_processes N -m rrnet ...`
and `torchrun --nproc_per_node N -m rrnet ...` (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import sys

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from rrnet.errors import RRNetError
from rrnet.locking import folder_lock

logger = logging.getLogger(__name__)

T = TypeVar("T")

WORLD_SIZE_ENV = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")  # as accelerate reads them
RANK_ENV = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
# one process may wait at a gather while another samples or trains its share: hours, not minutes
TIMEOUT = timedelta(hours=24)


class PeerFailed(RRNetError):
    """Another process of the run failed: the main process reports its error, the others only stop."""


def _env_int(names: Sequence[str], default: int) -> int:
    """The first of these environment variables that is set, as accelerate reads them."""
    for name in names:
        value = os.environ.get(name, "")
        if value.strip().isdigit():
            return int(value)
    return default


def launched_rank() -> int:
    """This process's rank as the launcher set it (0 when started without a launcher)."""
    return _env_int(RANK_ENV, 0)


def launched_world_size() -> int:
    """How many processes the launcher says this run has (1 when started without a launcher)."""
    return _env_int(WORLD_SIZE_ENV, 1)


def _single_process_launch_note() -> str | None:
    """Why `accelerate launch` asked for several processes but started one, if it did."""
    asked = "MASTER_ADDR" in os.environ and "ACCELERATE_USE_CPU" in os.environ
    if not asked or launched_world_size() > 1:
        return None
    return ("accelerate launch started one process: with --cpu, or without GPUs and without --multi_gpu, it ignores "
            "--num_processes; for several CPU processes run `accelerate launch --multi_gpu --num_processes N -m rrnet "
            "...` or `torchrun --nproc_per_node N -m rrnet ...`")


class Processes:
    """This process's place in a run: alone (no state, no process group) or one of several.

    Every collective method (`split` excepted) must be called by every process in the same
    order; a single process returns its own values unchanged.
    """

    def __init__(self, state: Any | None = None) -> None:
        self.state = state  # accelerate.PartialState when several processes share the run

    @property
    def several(self) -> bool:
        return self.state is not None and self.state.num_processes > 1

    @property
    def num_processes(self) -> int:
        return self.state.num_processes if self.several else 1

    @property
    def index(self) -> int:
        return self.state.process_index if self.several else 0

    @property
    def is_main(self) -> bool:
        return self.index == 0

    @property
    def device(self) -> str | None:
        """This process's device when several share the run (its own GPU), else None: the caller's choice."""
        return str(self.state.device) if self.several else None

    def split(self, items: Sequence[T]) -> list[T]:
        """This process's contiguous share of `items` (`PartialState.split_between_processes`)."""
        if not self.several:
            return list(items)
        with self.state.split_between_processes(list(items)) as mine:
            return list(mine)

    def broadcast(self, value: T) -> T:
        """The main process's `value`, on every process."""
        if not self.several:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value])[0]

    def gather(self, items: list[T]) -> list[T]:
        """Every process's `items`, concatenated in process order, on every process (`gather_object`)."""
        if not self.several:
            return list(items)
        from accelerate.utils import gather_object

        return gather_object(list(items))

    def _settle(self, error: BaseException | None) -> None:
        """Share whether each process failed; if any did, raise on all (a process its own error)."""
        errors = self.gather([None if error is None else f"process {self.index}: {error}"])
        if error is not None:
            raise error
        failed = next((e for e in errors if e is not None), None)
        if failed is not None:
            raise PeerFailed(failed)

    @contextmanager
    def together(self) -> Iterator[None]:
        """Run a block on every process and leave it together: if it fails on any process, it
        raises on every process, so none waits forever for a peer that has stopped. The block
        itself must not call collective methods."""
        if not self.several:
            yield
            return
        try:
            yield
        except Exception as exc:
            self._settle(exc)
            raise
        self._settle(None)

    def from_main(self, work: Callable[[], T]) -> T:
        """Call `work()` on the main process only and return its value on every process; its
        exception is raised on the main process and stops the others (`PeerFailed`)."""
        if not self.several:
            return work()
        outcome: tuple[bool, Any] = (True, None)
        error: BaseException | None = None
        if self.is_main:
            try:
                outcome = (True, work())
            except Exception as exc:
                error, outcome = exc, (False, str(exc))
        ok, value = self.broadcast(outcome)
        if error is not None:
            raise error
        if not ok:
            raise PeerFailed(f"the main process failed ({value})")
        return value

    @contextmanager
    def main_lock(self, folder: str | Path) -> Iterator[None]:
        """The output folder's lock, held by the main process for the whole block: the other
        processes start writing only once the main process holds it (`rrnet.locking`)."""
        if not self.several:
            with folder_lock(folder):
                yield
            return
        with ExitStack() as stack:
            def take() -> None:
                stack.enter_context(folder_lock(folder))

            self.from_main(take)
            yield


def current_processes(device: str | None = None) -> Processes:
    """The run's processes, from the launcher's environment: `PartialState` (with `cpu=True` when
    `device` is the CPU or no GPU is present, or every process would believe it is alone) when
    several processes were launched, else a single process with no process group."""
    import torch

    if launched_world_size() <= 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        note = _single_process_launch_note()
        if note:
            logger.warning(note)
        return Processes()
    from accelerate import PartialState

    kind = (device or ("cuda" if torch.cuda.is_available() else "cpu")).split(":")[0]
    state = PartialState(cpu=kind == "cpu", timeout=TIMEOUT)
    if state.num_processes <= 1:
        raise RRNetError(f"the launcher started {launched_world_size()} processes but they could not join one process "
                         f"group on device {kind!r}; give --device cpu or cuda")
    return Processes(state)


def close_process_group() -> None:
    """Tear down the run's process group, if one was started, before the interpreter exits: left
    to exit-time destructors, gloo's threads can abort a finished process ("terminate called
    without an active exception")."""
    torch = sys.modules.get("torch")  # never import torch just to find there is nothing to close
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
