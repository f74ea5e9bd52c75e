"""Handing the pipeline back as it was: grad and train/eval flags, and the global random state.

Training freezes the backbone and the evaluation methods load weights into it; neither may
leave a trace. diffusers' loaders draw random initial values (for LoRA matrices, for new token
rows) before overwriting them, so loading is done with the global RNG forked: an evaluation that
seeds its own generators sees the same random streams with or without a baseline applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

from rrnet.backbone_state import backbone_modules, frozen_backbone, preserved_flags

__all__ = ["backbone_modules", "check_no_backbone_gradients", "frozen_backbone", "preserved_flags", "preserved_rng",
           "quiet_loaders"]


def check_no_backbone_gradients(pipe, trainable: Iterable[torch.nn.Parameter] = ()) -> None:
    """The frozen weights must not have received gradients (a bug in a baseline if they did)."""
    allowed = {id(p) for p in trainable}
    for name, module in backbone_modules(pipe).items():
        leaked = [n for n, p in module.named_parameters() if p.grad is not None and id(p) not in allowed]
        if leaked:
            raise RuntimeError(f"frozen {name} parameters received gradients: {leaked[:3]}")


@contextmanager
def preserved_rng(device: torch.device | str) -> Iterator[None]:
    """Run a block without consuming the global CPU (and this CUDA device's) random stream."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield


@contextmanager
def quiet_loaders() -> Iterator[None]:
    """Silence diffusers/transformers warnings that loading a baseline always triggers.

    (LoRA files hold no text-encoder keys; new token rows get a random start before being
    overwritten.) Errors still show.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = [(lib, lib.get_verbosity()) for lib in (diffusers_logging, transformers_logging)]
    for lib, _ in levels:
        lib.set_verbosity_error()
    try:
        yield
    finally:
        for lib, level in levels:
            lib.set_verbosity(level)
