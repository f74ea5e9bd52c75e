"""The mini world's exact judge applied to analysis images, when the relation is a mini-world one.

Each set of images is judged against the prompt it was generated from, read in that prompt's
direction: `relation_accuracy` is "the image shows what this prompt says", `swapped_rate` is
"the image shows the object-swapped prompt". Prompts from other models are simply not judged.
"""

from __future__ import annotations

from PIL import Image

from rrnet.errors import PromptError
from rrnet.tokens import order_in_prompt, tokenize_prompt, word_positions
from rrnet.world.evaluate import judge_arrays
from rrnet.world.vocab import object_names, relation_phrases

Triplet = tuple[str, str, str]


def in_mini_world(triplet: Triplet | None) -> bool:
    """True when both objects and the relation are mini-world words (so the exact judge applies)."""
    if triplet is None:
        return False
    a, relation, b = triplet
    return a in object_names() and b in object_names() and relation in relation_phrases()


def prompt_direction(tokenizer, prompt: str, triplet: Triplet) -> str | None:
    """"ARB" when the prompt names A first, "BRA" when B first, None when any of the three words is missing."""
    a, relation, b = triplet
    try:
        tokens = tokenize_prompt(tokenizer, prompt)
        word_positions(tokenizer, tokens, relation)
        return "ARB" if order_in_prompt(tokenizer, tokens, a, b) else "BRA"
    except PromptError:
        return None


def judge_for_prompt(tokenizer, images: list[Image.Image], prompt: str, triplet: Triplet | None) -> dict | None:
    """Judged fractions of `images` against `prompt`'s own direction, or None if not applicable."""
    if not in_mini_world(triplet) or not images:
        return None
    direction = prompt_direction(tokenizer, prompt, triplet)
    if direction is None:
        return None
    a, relation, b = triplet if direction == "ARB" else (triplet[2], triplet[1], triplet[0])
    return {"judged_as": [a, relation, b], "n": len(images), **judge_arrays(images, a, relation, b)}
