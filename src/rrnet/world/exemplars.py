"""Write mini-world exemplar folders: one relation in the official layout, two in its extension.

One relation, the official RRNet layout: ``<folder>/index.json`` with keys A, R, B, ARB, BRA,
ARB_dir, BRA_dir (and "category"), plus image folders ``<A>/``, ``<B>/``, ``<ARB_dir>/`` and
``<BRA_dir>/`` holding 1.png, 2.png, ...

Two relations sharing an object (the world's three-object scenes): ``index.json`` with
``relations`` ([[A, R, B], [C, R2, D]]), ``prompt`` and ``prompt_dir`` (the caption and its
images), ``swapped`` and ``swapped_dirs`` (per relation, the caption with that relation's objects
swapped, and its images: the negatives), ``objects`` (each object's single-object image folder)
and ``category``. A folder appears by one rename once all its files are written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rrnet.atomic import atomic_write_folder, atomic_write_text
from rrnet.data.images import save_image_atomic
from rrnet.errors import DataError
from rrnet.locking import folder_lock
from rrnet.world.render import BASE_SIZE, render_object, render_relations, to_pil
from rrnet.world.vocab import Triplet, caption_for, check_relations, prompt_for, swap_clause


def folder_name(a: str, relation: str, b: str) -> str:
    """Default folder name for one (A, relation, B) triple, e.g. "red_circle_above_blue_square"."""
    return f"{a} {relation} {b}".replace(" ", "_")


def scene_folder_name(triplets: Sequence[Triplet]) -> str:
    """Default folder name for a caption's relations: the relations' folder names joined by "__and__"."""
    return "__and__".join(folder_name(*t) for t in triplets)


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


def scene_index(triplets: Sequence[Triplet]) -> dict:
    """The index.json content for a two-relation caption (see the module docstring)."""
    triplets = check_relations(triplets)
    prompt = caption_for(triplets)
    swapped = [caption_for(swap_clause(triplets, k)) for k in range(len(triplets))]
    objects = list(dict.fromkeys(x for a, _, b in triplets for x in (a, b)))
    return {"relations": [list(t) for t in triplets], "prompt": prompt, "prompt_dir": prompt, "swapped": swapped,
            "swapped_dirs": swapped, "objects": {obj: obj for obj in objects}, "category": "position"}


def _check_count(n_images: int) -> None:
    if n_images < 1:
        raise DataError(f"n_images must be at least 1, got {n_images}")


def _write_folder(folder: Path, index: dict, jobs, n_images: int) -> Path:
    """Render every (sub-folder, render) job `n_images` times and write the folder as one unit.

    One writer at a time: the swap that puts the new folder in place is safe against a kill, not
    against a second process swapping the same folder, so another run writing it is refused."""
    def write(tmp: Path) -> None:
        for sub, render in jobs:
            for k in range(1, n_images + 1):
                save_image_atomic(to_pil(render()), tmp / sub / f"{k}.png")
        atomic_write_text(tmp / "index.json", json.dumps(index, indent=4) + "\n")

    with folder_lock(folder):
        return atomic_write_folder(folder, write)


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
    check_relations([(a, relation, b)])
    _check_count(n_images)
    index = relation_index(a, relation, b)
    rng = np.random.default_rng(seed)
    jobs = (
        (index["ARB_dir"], lambda: render_relations([(a, relation, b)], rng, size)[0]),
        (index["BRA_dir"], lambda: render_relations([(b, relation, a)], rng, size)[0]),
        (a, lambda: render_object(a, rng, size)[0]),
        (b, lambda: render_object(b, rng, size)[0]),
    )
    return _write_folder(Path(root) / (name or folder_name(a, relation, b)), index, jobs, n_images)


def write_scene_folder(
    root: str | Path,
    triplets: Sequence[Triplet],
    n_images: int = 5,
    size: int = BASE_SIZE,
    seed: int = 0,
    name: str | None = None,
) -> Path:
    """Write the exemplar folder of a two-relation caption (one relation: `write_relation_folder`)."""
    triplets = check_relations(triplets)
    if len(triplets) == 1:
        return write_relation_folder(root, *triplets[0], n_images=n_images, size=size, seed=seed, name=name)
    _check_count(n_images)
    index = scene_index(triplets)
    rng = np.random.default_rng(seed)
    jobs = [(index["prompt_dir"], lambda t=triplets: render_relations(t, rng, size)[0])]
    for k, sub in enumerate(index["swapped_dirs"]):
        jobs.append((sub, lambda t=swap_clause(triplets, k): render_relations(t, rng, size)[0]))
    for obj in index["objects"]:
        jobs.append((obj, lambda o=obj: render_object(o, rng, size)[0]))
    return _write_folder(Path(root) / (name or scene_folder_name(triplets)), index, jobs, n_images)
