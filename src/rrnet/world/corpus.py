"""The mini world's captions, what each one states, and random (image, caption) training batches.

Caption grammar (`vocab.caption_for`): one object ("a photo of a red circle"), one relation
("a red circle above a blue square"), or two relations on different axes sharing one object,
joined by "and", the shared object named the second time with "the" ("a red circle above a blue
square and a green triangle left of the blue square"). Every way of stating a scene is in the
corpus: either relation first, either object first in each clause (with the matching phrase).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from rrnet.world.recipe import OBJECT_SENTENCE, WorldRecipe
from rrnet.world.render import render_object, render_relations
from rrnet.world.vocab import (
    Triplet,
    canonical,
    caption_for,
    get_relation,
    object_names,
    object_prompt,
    relation_phrases,
    swap_clause,
)


@dataclass(frozen=True)
class PromptItem:
    """One caption and what it states: its objects and its relations in text order."""

    text: str
    objects: tuple[str, ...]
    triplets: tuple[Triplet, ...] = ()
    collapsed: tuple[bool, ...] = ()  # per relation: is its direction hidden from the EOT

    @property
    def relation(self) -> str | None:
        """The relation phrase of a one-relation caption (None otherwise)."""
        return self.triplets[0][1] if len(self.triplets) == 1 else None

    def layout(self, axis: str) -> tuple[str, str] | None:
        """(first, second) object on `axis` (left/top first), or None when no relation uses it."""
        for a, relation, b in self.triplets:
            c = canonical(a, relation, b)
            if c.axis == axis:
                return c.first, c.second
        return None

    def twin(self, k: int) -> str:
        """The caption with the objects of relation `k` swapped: same words, other arrangement."""
        return caption_for(swap_clause(self.triplets, k))


def relation_item(recipe: WorldRecipe, triplets) -> PromptItem:
    """The corpus item of a caption stating `triplets`."""
    triplets = tuple(tuple(t) for t in triplets)
    objects = tuple(dict.fromkeys(x for a, _, b in triplets for x in (a, b)))
    return PromptItem(caption_for(triplets), objects, triplets, tuple(recipe.is_collapsed(*t) for t in triplets))


def pair_prompts(recipe: WorldRecipe) -> list[PromptItem]:
    """Every "a {A} {relation} a {B}" prompt over ordered object pairs and relations."""
    return [relation_item(recipe, [(a, rel, b)]) for a, b in itertools.permutations(object_names(), 2)
            for rel in relation_phrases()]


def _phrases_on(axis: str) -> list[str]:
    return [p for p in relation_phrases() if get_relation(p).axis == axis]


def scene_prompts(recipe: WorldRecipe) -> list[PromptItem]:
    """Every two-relation caption: shared S, one partner on each axis, every way of saying it."""
    items = []
    vertical, horizontal = _phrases_on("y"), _phrases_on("x")
    for s, p, q in itertools.permutations(object_names(), 3):
        for clause_v in itertools.chain(((p, r, s) for r in vertical), ((s, r, p) for r in vertical)):
            for clause_h in itertools.chain(((q, r, s) for r in horizontal), ((s, r, q) for r in horizontal)):
                items.append(relation_item(recipe, (clause_v, clause_h)))
                items.append(relation_item(recipe, (clause_h, clause_v)))
    return items


def single_prompts() -> list[PromptItem]:
    """Single-object prompts: the world's own ("a photo of a X") and the rectifier's object sentence."""
    items = []
    for obj in object_names():
        items.append(PromptItem(object_prompt(obj), (obj,)))
        items.append(PromptItem(OBJECT_SENTENCE.format(obj), (obj,)))
    return items


@dataclass
class Corpus:
    """The world's captions by kind, built once."""

    pairs: list[PromptItem]
    scenes: list[PromptItem]
    singles: list[PromptItem]

    @classmethod
    def build(cls, recipe: WorldRecipe) -> "Corpus":
        return cls(pair_prompts(recipe), scene_prompts(recipe), single_prompts())

    @cached_property
    def collapsed_scenes(self) -> list[PromptItem]:
        """Two-relation captions with at least one collapsed relation."""
        return [it for it in self.scenes if any(it.collapsed)]

    @cached_property
    def doubly_collapsed_scenes(self) -> list[PromptItem]:
        """Two-relation captions whose relations are both collapsed (four layouts, one conditioning)."""
        return [it for it in self.scenes if all(it.collapsed)]


def sample_item(recipe: WorldRecipe, rng: np.random.Generator, corpus: Corpus, collapsed_rate: float = 0.0) -> PromptItem:
    """A random caption: a single object, one relation or two, at the recipe's rates.

    With `collapsed_rate`, that share of the draws is a scene stating a collapsed relation (half of
    them with both relations collapsed): the layouts a collapsed caption stands for are many and
    each is rare in the plain mix, so the denoiser sees them too seldom to learn to draw them all."""
    if collapsed_rate:
        u = rng.random()
        if u < collapsed_rate:
            pool = corpus.doubly_collapsed_scenes if u < collapsed_rate / 2 else corpus.collapsed_scenes
            return pool[rng.integers(len(pool))]
    u = rng.random()
    if u < recipe.single_object_rate:
        pool = corpus.singles
    elif u < recipe.single_object_rate + recipe.scene_rate:
        pool = corpus.scenes
    else:
        pool = corpus.pairs
    return pool[rng.integers(len(pool))]


def render_item(item: PromptItem, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random image of what the caption states."""
    if not item.triplets:
        return render_object(item.objects[0], rng, size)[0]
    return render_relations(item.triplets, rng, size)[0]


def sample_batch(recipe: WorldRecipe, rng: np.random.Generator, batch: int, corpus: Corpus,
                 collapsed_rate: float = 0.0) -> tuple[torch.Tensor, list[str]]:
    """A batch of rendered images in [-1, 1] (B, 3, S, S) and their captions ("" for some)."""
    images, captions = [], []
    for _ in range(batch):
        item = sample_item(recipe, rng, corpus, collapsed_rate)
        images.append(render_item(item, rng, recipe.size))
        captions.append("" if rng.random() < recipe.empty_caption_rate else item.text)
    array = np.stack(images).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous(), captions


