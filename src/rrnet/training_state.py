"""Resumable training state in safetensors + JSON: model weights, optimiser moments, RNG, step.

Nothing is pickled, so a checkpoint from anywhere can be loaded safely. Files are written to a
temporary name and renamed, so an interrupted run always leaves the previous complete checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rrnet.atomic import atomic_write, atomic_write_text
from rrnet.errors import CheckpointError


def save_state(
    path: str | Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None,
    step: int,
    rng: np.random.Generator | None = None,
    extra: dict | None = None,
) -> None:
    """Write `{path}.safetensors` (tensors) and `{path}.json` (step, optimiser groups, RNG, extra)."""
    path = Path(path)
    tensors = {f"module.{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items() for k, v in m.state_dict().items()}
    meta: dict = {"step": step, "extra": extra or {}}
    if optimizer is not None:
        state = optimizer.state_dict()
        meta["param_groups"] = state["param_groups"]
        for pid, slots in state["state"].items():
            for key, value in slots.items():
                value = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if rng is not None:
        meta["rng_numpy"] = rng.bit_generator.state
    atomic_write(path.with_suffix(".safetensors"), lambda p: save_file(tensors, p))
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, default=int))


def load_state(
    path: str | Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None = None,
    rng: np.random.Generator | None = None,
) -> dict:
    """Restore what `save_state` wrote; returns the JSON metadata (with `step`)."""
    path = Path(path)
    try:
        tensors = load_file(path.with_suffix(".safetensors"))
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable training checkpoint ({exc})") from None
    for name, module in modules.items():
        prefix = f"module.{name}."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    if optimizer is not None and "param_groups" in meta:
        state: dict = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, pid, slot = key.split(".", 2)
                state.setdefault(int(pid), {})[slot] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    if rng is not None and "rng_numpy" in meta:
        rng.bit_generator.state = meta["rng_numpy"]
    return meta


def has_state(path: str | Path) -> bool:
    path = Path(path)
    return path.with_suffix(".safetensors").is_file() and path.with_suffix(".json").is_file()
