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


def write_reference_scenes(root: str | Path, n: int = 1000, size: int = 32, seed: int = 0) -> Path:
    """`n` rendered two-object scenes with random objects and relations: the "real images" of FID."""
    import numpy as np

    from rrnet.data import save_image_atomic
    from rrnet.world.render import render_pil
    from rrnet.world.vocab import object_names, relation_phrases

    root = Path(root)
    rng = np.random.default_rng(seed)
    objects, relations = object_names(), relation_phrases()
    for k in range(n):
        a, b = rng.choice(len(objects), size=2, replace=False)
        relation = relations[int(rng.integers(len(relations)))]
        image, _ = render_pil(objects[a], relation, objects[b], rng, size)
        save_image_atomic(image, root / f"{k:05d}.png")
    return root
