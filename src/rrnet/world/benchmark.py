"""Mini-world benchmark folders: relations chosen from the recipe's splits, in the official layout.

A benchmark is a folder of relation folders. Which object pairs go in comes from the recipe's
fixed split (`train` and `heldout` collapsed pairs, order-aware `control` pairs) or from pairs
named explicitly; which relation phrases come with each pair is a list (each pair only takes the
phrases of its own axis). Two-relation scenes built from the chosen pairs can be added too.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from rrnet.errors import DataError
from rrnet.world.exemplars import write_relation_folder, write_scene_folder
from rrnet.world.recipe import PairOnAxis, WorldRecipe
from rrnet.world.vocab import Triplet, get_object, get_relation, object_names, prompt_for, relation_phrases

SPLITS = ("train", "heldout", "control", "collapsed")


def split_pairs(recipe: WorldRecipe, splits: Sequence[str]) -> list[PairOnAxis]:
    """The recipe's pairs of the named splits ("collapsed" = train + heldout), in recipe order."""
    table = {"train": recipe.train_pairs, "heldout": recipe.heldout_pairs, "control": recipe.control_pairs,
             "collapsed": recipe.collapsed_pairs}
    out: list[PairOnAxis] = []
    for split in splits:
        if split not in table:
            raise DataError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        out.extend(p for p in table[split] if p not in out)
    return out


def order_aware_pairs(recipe: WorldRecipe, exclude_control: bool = True) -> list[PairOnAxis]:
    """Every pair on each axis that the text encoder orders, except (by default) the control pairs,
    which stay untouched by anything that trains."""
    skip = ("train", "heldout", "control") if exclude_control else ("train", "heldout")
    return [(a, b, axis) for a, b in itertools.combinations(object_names(), 2) for axis in ("y", "x")
            if recipe.split_of(a, b, axis) not in skip]


def direction_prompt_pairs(pairs: Sequence[PairOnAxis]) -> list[tuple[str, str]]:
    """(prompt, swapped prompt) for each pair and each relation phrase of its axis."""
    return [(prompt_for(a, r, b), prompt_for(b, r, a)) for a, r, b in pair_relations(pairs)]


def pair_relations(pairs: Sequence[PairOnAxis], phrases: Sequence[str] | None = None) -> list[Triplet]:
    """One (A, R, B) per pair and phrase of the pair's axis (all four phrases by default)."""
    phrases = list(phrases or relation_phrases())
    for phrase in phrases:
        get_relation(phrase)
    out = []
    for a, b, axis in pairs:
        get_object(a)
        get_object(b)
        out.extend((a, phrase, b) for phrase in phrases if get_relation(phrase).axis == axis)
    if not out:
        raise DataError(f"no relation phrase in {phrases} lies on the axis of the chosen pairs")
    return out


def scene_relations(pairs: Sequence[PairOnAxis], phrases: Sequence[str] | None = None) -> list[tuple[Triplet, Triplet]]:
    """Two-relation captions built from a vertical and a horizontal pair that share one object."""
    phrases = list(phrases or relation_phrases())
    vertical = [p for p in phrases if get_relation(p).axis == "y"]
    horizontal = [p for p in phrases if get_relation(p).axis == "x"]
    out = []
    for (a, b, ax1), (c, d, ax2) in itertools.product(pairs, pairs):
        if (ax1, ax2) != ("y", "x") or len({a, b} & {c, d}) != 1:
            continue
        for rv, rh in itertools.product(vertical, horizontal):
            out.append(((a, rv, b), (c, rh, d)))
    return out


def write_world_benchmark(root: str | Path, relations: Sequence[Sequence[Triplet] | Triplet], n_images: int = 5,
                          size: int = 32, seed: int = 0) -> Path:
    """One exemplar folder per relation or two-relation caption under `root` (same arguments, same files)."""
    root = Path(root)
    for k, item in enumerate(relations):
        if isinstance(item[0], str):
            write_relation_folder(root, *item, n_images=n_images, size=size, seed=seed + k)
        else:
            write_scene_folder(root, item, n_images=n_images, size=size, seed=seed + k)
    return root


def write_reference_scenes(root: str | Path, n: int = 1000, size: int = 32, seed: int = 0) -> Path:
    """`n` rendered two-object scenes with random objects and relations: the "real images" of FID."""
    import numpy as np

    from rrnet.data import save_image_atomic
    from rrnet.world.render import render_pil
    from rrnet.world.vocab import object_names

    root = Path(root)
    rng = np.random.default_rng(seed)
    objects, relations = object_names(), relation_phrases()
    for k in range(n):
        a, b = rng.choice(len(objects), size=2, replace=False)
        relation = relations[int(rng.integers(len(relations)))]
        image, _ = render_pil(objects[a], relation, objects[b], rng, size)
        save_image_atomic(image, root / f"{k:05d}.png")
    return root
