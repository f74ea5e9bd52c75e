"""The exemplar images every baseline trains on: both prompts' images, as cached VAE posteriors.

The same folders RRNet's positive and negative terms use (prompt images with the prompt,
swapped images with the swapped prompt), loaded and VAE-encoded by RRNet's own helpers, so a
baseline and a rectifier see exactly the same pixels and latents.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rrnet.backbones.denoising import default_resolution, latent_distribution
from rrnet.baselines.config import BaselineConfig
from rrnet.data import RelationSpec, load_images


@dataclass
class Exemplar:
    """One training image: the text it is paired with and its VAE posterior (scaled latents)."""

    side: str  # "prompt" (A R B) or "swapped" (B R A)
    text: str
    latent_mean: torch.Tensor
    latent_std: torch.Tensor

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        """A fresh draw from the posterior, like RRNet's `exemplar_latent`."""
        eps = torch.randn(self.latent_mean.shape, generator=generator)
        return self.latent_mean + self.latent_std * eps.to(self.latent_std.device)


def relation_prompts(spec: RelationSpec) -> dict[str, str]:
    """The two sides a baseline trains on and their prompts."""
    return {"prompt": spec.prompt, "swapped": spec.swapped_prompt}


def prepare_exemplars(
    pipe, spec: RelationSpec, config: BaselineConfig, texts: dict[str, str] | None = None
) -> list[Exemplar]:
    """Load and VAE-encode both prompts' images; `texts` replaces the prompts (e.g. learned tokens)."""
    texts = texts or relation_prompts(spec)
    resolution = config.resolution or default_resolution(pipe)
    exemplars = []
    for side, paths in (("prompt", spec.images_prompt), ("swapped", spec.images_swapped)):
        mean, std = latent_distribution(pipe, load_images(paths, resolution))
        exemplars += [Exemplar(side, texts[side], m, s) for m, s in zip(mean, std)]
    return exemplars
