"""Resumable training state in safetensors + JSON: model weights, optimiser moments, RNG, step.

Nothing is pickled, so a checkpoint from anywhere can be loaded safely. The metadata travels
inside the safetensors file (and beside it as `.json` for reading), and the file is written to a
temporary name and renamed, so a kill at any moment leaves one complete checkpoint: weights and
step always belong together.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from rrnet.atomic import atomic_write, atomic_write_text
from rrnet.errors import CheckpointError


META_KEY = "rrnet_training_state"


def save_state(
    path: str | Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None,
    step: int,
    rng: np.random.Generator | None = None,
    extra: dict | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write `{path}.safetensors` (tensors) and `{path}.json` (step, optimiser groups, RNG, extra).

    `tensors` are further named tensors (generator states, say); `load_state` returns them.
    """
    path = Path(path)
    extra_tensors = {f"extra.{k}": v.detach().cpu().contiguous() for k, v in (tensors or {}).items()}
    tensors = {f"module.{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items() for k, v in m.state_dict().items()}
    tensors.update(extra_tensors)
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
    text = json.dumps(meta, default=int)
    atomic_write(path.with_suffix(".safetensors"), lambda p: save_file(tensors, p, metadata={META_KEY: text}))
    atomic_write_text(path.with_suffix(".json"), text)


def load_state(
    path: str | Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None = None,
    rng: np.random.Generator | None = None,
) -> dict:
    """Restore what `save_state` wrote; returns the JSON metadata (with `step`, and the extra
    `tensors` by name). A missing or damaged entry is a CheckpointError."""
    path = Path(path)
    try:
        with safe_open(path.with_suffix(".safetensors"), framework="pt") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}
            stored = (f.metadata() or {}).get(META_KEY)
        meta = json.loads(stored if stored is not None else path.with_suffix(".json").read_text(encoding="utf-8"))
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
        meta["step"] = int(meta["step"])
        meta["tensors"] = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, SafetensorError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{path}: unreadable or damaged training checkpoint ({type(exc).__name__}: {reason})") from None
    return meta


def has_state(path: str | Path) -> bool:
    """Whether a training checkpoint file exists at `path` (it may still be damaged)."""
    return Path(path).with_suffix(".safetensors").is_file()
