"""The mini world's prompts, their labels, and random (image, prompt) batches for training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rrnet.world.recipe import OBJECT_SENTENCE, WorldRecipe
from rrnet.world.render import render_object, render_scene
from rrnet.world.vocab import canonical, object_names, object_prompt, prompt_for, relation_phrases


@dataclass(frozen=True)
class PromptItem:
    """One prompt and what it says: its objects and, for two objects, the canonical layout."""

    text: str
    objects: tuple[str, ...]
    relation: str | None = None
    axis: str | None = None
    first: str | None = None  # the object with the smaller coordinate on `axis` (left / top)
    second: str | None = None
    collapsed: bool = False


def pair_prompts(recipe: WorldRecipe) -> list[PromptItem]:
    """Every "a {A} {relation} a {B}" prompt over ordered object pairs and relations."""
    items = []
    for a in object_names():
        for b in object_names():
            if a == b:
                continue
            for rel in relation_phrases():
                c = canonical(a, rel, b)
                items.append(PromptItem(prompt_for(a, rel, b), (a, b), rel, c.axis, c.first, c.second,
                                        recipe.is_collapsed(a, rel, b)))
    return items


def single_prompts() -> list[PromptItem]:
    """Single-object prompts: the world's own ("a photo of a X") and the rectifier's object sentence."""
    items = []
    for obj in object_names():
        items.append(PromptItem(object_prompt(obj), (obj,)))
        items.append(PromptItem(OBJECT_SENTENCE.format(obj), (obj,)))
    return items


def all_prompts(recipe: WorldRecipe) -> list[PromptItem]:
    return [PromptItem("", ())] + pair_prompts(recipe) + single_prompts()


def sample_batch(
    recipe: WorldRecipe, rng: np.random.Generator, batch: int, pairs: list[PromptItem], singles: list[PromptItem]
) -> tuple[torch.Tensor, list[str]]:
    """A batch of rendered images in [-1, 1] (B, 3, S, S) and their captions ("" for some)."""
    images, captions = [], []
    for _ in range(batch):
        if rng.random() < recipe.single_object_rate:
            item = singles[rng.integers(len(singles))]
            image, _ = render_object(item.objects[0], rng, recipe.size)
        else:
            item = pairs[rng.integers(len(pairs))]
            image, _ = render_scene(item.objects[0], item.relation, item.objects[1], rng, recipe.size)
        images.append(image)
        captions.append("" if rng.random() < recipe.empty_caption_rate else item.text)
    array = np.stack(images).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous(), captions
