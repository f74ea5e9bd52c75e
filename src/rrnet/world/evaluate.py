"""Sample a prompt many times and judge every image exactly: relation and object accuracy.

A prompt states "A <relation> B"; an image is correct when the exact judge finds both objects
and the verdict is "ARB". Image k uses seed `seed + k`, so base and rectified runs share noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from rrnet.generate import prompt_embeddings, sample_arrays
from rrnet.world.judge import RELATION_OUTCOMES, judge_image, judge_relations
from rrnet.world.vocab import caption_for, check_relations, prompt_for


@dataclass
class PromptScore:
    """Judged samples of one prompt at one setting."""

    prompt: str
    alpha: float | None
    n: int
    relation_accuracy: float  # verdict == ARB
    swapped_rate: float  # verdict == BRA
    object_accuracy: float  # both objects found

    def as_dict(self) -> dict:
        return asdict(self)


def judge_arrays(images: np.ndarray, a: str, relation: str, b: str) -> dict[str, float]:
    """Relation accuracy, swapped rate and object accuracy of judged images of "A relation B"."""
    verdicts = [judge_image(im, a, relation, b) for im in images]
    n = len(verdicts)
    return {
        "relation_accuracy": sum(v.verdict == "ARB" for v in verdicts) / n,
        "swapped_rate": sum(v.verdict == "BRA" for v in verdicts) / n,
        "object_accuracy": sum(v.has_a and v.has_b for v in verdicts) / n,
    }


def score_prompt(
    pipe, a: str, relation: str, b: str, n: int = 100, seed: int = 0, alpha: float | None = None,
    rectifier=None, steps: int = 25, guidance: float = 4.0, triplet=None,
) -> tuple[PromptScore, np.ndarray]:
    """Sample "a {a} {relation} a {b}" `n` times (base, or rectified at `alpha`) and judge it."""
    prompt = prompt_for(a, relation, b)
    with torch.no_grad():
        embeds = prompt_embeddings(pipe, prompt, alpha, rectifier, triplet)
    images = sample_arrays(pipe, embeds, n, seed, steps, guidance)
    return PromptScore(prompt=prompt, alpha=alpha, n=n, **judge_arrays(images, a, relation, b)), images


def judge_caption_arrays(images: np.ndarray, triplets) -> dict:
    """All-relations-correct rate, per-relation outcome rates and object accuracy of judged images."""
    triplets = check_relations(triplets)
    judged = [judge_relations(im, triplets) for im in images]
    n = len(judged)
    per_relation = [{outcome: sum(j.outcomes[k] == outcome for j in judged) / n for outcome in RELATION_OUTCOMES}
                    for k in range(len(triplets))]
    return {"all_correct": sum(j.all_correct for j in judged) / n, "per_relation": per_relation,
            "object_accuracy": sum(j.objects_found for j in judged) / n}


def score_caption(pipe, triplets, n: int = 100, seed: int = 0, steps: int = 25, guidance: float = 4.0,
                  embeds: torch.Tensor | None = None) -> tuple[dict, np.ndarray]:
    """Sample the caption of `triplets` `n` times (base model unless `embeds` is given) and judge every relation."""
    prompt = caption_for(triplets)
    if embeds is None:
        with torch.no_grad():
            embeds = prompt_embeddings(pipe, prompt, None, None)
    images = sample_arrays(pipe, embeds, n, seed, steps, guidance)
    return {"prompt": prompt, "n": n, **judge_caption_arrays(images, triplets)}, images
