"""The record a mini-world model folder carries (`world.json`): its recipe and sampling defaults.

Kept apart from the build so that generation and evaluation can read it without training code.
"""

from __future__ import annotations

import json
from pathlib import Path

from rrnet.errors import RRNetError

WORLD_FILE = "world.json"


def shipped_backbone() -> Path:
    """The mini-world backbone that ships with rrnet (built by `rrnet world build`)."""
    return Path(__file__).resolve().parent / "mini_sd"


def world_info(model_dir: str | Path) -> dict | None:
    """The `world.json` record of a mini-world model folder (None for any other model)."""
    path = Path(model_dir) / WORLD_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RRNetError(f"{path}: unreadable mini-world record ({exc})") from None
    if not isinstance(info, dict):
        raise RRNetError(f"{path}: a mini-world record must be a JSON object")
    return info


def world_sampling(model_dir: str | Path) -> dict | None:
    """Sampling settings the model was measured with ({"num_inference_steps", "guidance_scale"}), or None."""
    info = world_info(model_dir)
    if info is None or "sampling" not in info:
        return None
    sampling = info["sampling"]
    try:
        return {"num_inference_steps": int(sampling["num_inference_steps"]), "guidance_scale": float(sampling["guidance_scale"])}
    except (KeyError, TypeError, ValueError):
        raise RRNetError(f"{Path(model_dir) / WORLD_FILE}: 'sampling' needs num_inference_steps and guidance_scale") from None


def load_recipe(model_dir: str | Path):
    """The `WorldRecipe` a mini-world model was built from."""
    from rrnet.world.recipe import WorldRecipe

    info = world_info(model_dir)
    if info is None:
        raise RRNetError(f"{model_dir}: not a mini-world model (no {WORLD_FILE})")
    return WorldRecipe.from_dict(info["recipe"])
