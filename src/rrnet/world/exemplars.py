"""Write mini-world exemplar folders in the official relation-dataset layout.

Layout: ``<folder>/index.json`` with keys A, R, B, ARB, BRA, ARB_dir, BRA_dir
(and "category"), plus image folders ``<A>/``, ``<B>/``, ``<ARB_dir>/`` and
``<BRA_dir>/`` holding 1.png, 2.png, ...
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rrnet.atomic import atomic_write_text
from rrnet.data.images import save_image_atomic
from rrnet.errors import DataError
from rrnet.world.render import BASE_SIZE, render_object, render_scene, to_pil
from rrnet.world.vocab import get_object, get_relation, prompt_for


def folder_name(a: str, relation: str, b: str) -> str:
    """Default folder name for one (A, relation, B) triple, e.g. "red_circle_above_blue_square"."""
    return f"{a} {relation} {b}".replace(" ", "_")


def relation_index(a: str, relation: str, b: str) -> dict[str, str]:
    """The index.json content for "A <relation> B"."""
    arb, bra = prompt_for(a, relation, b), prompt_for(b, relation, a)
    return {
        "A": a,
        "R": relation,
        "B": b,
        "ARB": arb,
        "BRA": bra,
        "ARB_dir": arb,
        "BRA_dir": bra,
        "category": "position",
    }


def write_relation_folder(
    root: str | Path,
    a: str,
    relation: str,
    b: str,
    n_images: int = 5,
    size: int = BASE_SIZE,
    seed: int = 0,
    name: str | None = None,
) -> Path:
    """Render and write one relation folder; the same arguments always give the same files.

    ``name`` overrides the folder name (default ``folder_name(a, relation, b)``).
    Returns the folder path.
    """
    get_object(a)
    get_object(b)
    get_relation(relation)
    if a == b:
        raise DataError("a relation folder needs two different objects")
    if n_images < 1:
        raise DataError(f"n_images must be at least 1, got {n_images}")
    folder = Path(root) / (name or folder_name(a, relation, b))
    index = relation_index(a, relation, b)
    rng = np.random.default_rng(seed)
    jobs = (
        (index["ARB_dir"], lambda: render_scene(a, relation, b, rng, size)[0]),
        (index["BRA_dir"], lambda: render_scene(b, relation, a, rng, size)[0]),
        (a, lambda: render_object(a, rng, size)[0]),
        (b, lambda: render_object(b, rng, size)[0]),
    )
    for sub, render in jobs:
        for k in range(1, n_images + 1):
            save_image_atomic(to_pil(render()), folder / sub / f"{k}.png")
    atomic_write_text(folder / "index.json", json.dumps(index, indent=4) + "\n")
    return folder
