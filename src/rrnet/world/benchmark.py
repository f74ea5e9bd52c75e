"""Mini-world benchmark folders: relations the base model gets wrong, in the official layout.

The default relations are the pairs whose prompts the mini world's text encoder collapses
(their EOT states are almost identical), so the base model draws them as a coin flip; the
unseen set holds a collapsed pair kept out of training and an order-aware control pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rrnet.world.exemplars import write_relation_folder

TRAIN_RELATIONS: tuple[tuple[str, str, str], ...] = (
    ("red circle", "above", "blue square"),
    ("green triangle", "above", "yellow diamond"),
    ("purple cross", "above", "cyan ring"),
)
UNSEEN_RELATIONS: tuple[tuple[str, str, str], ...] = (
    ("red circle", "above", "green triangle"),  # collapsed, never trained on
    ("cyan ring", "above", "yellow diamond"),  # order-aware control: the base model already draws it
)


def write_world_benchmark(root: str | Path, relations: Sequence[tuple[str, str, str]] = TRAIN_RELATIONS,
                          n_images: int = 5, size: int = 32, seed: int = 0) -> Path:
    """Write one official-layout relation folder per triplet under `root` (same arguments, same files)."""
    root = Path(root)
    for k, (a, relation, b) in enumerate(relations):
        write_relation_folder(root, a, relation, b, n_images=n_images, size=size, seed=seed + k)
    return root
