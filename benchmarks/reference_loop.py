"""The official RRNet per-step work, re-created on any diffusers backbone, as a baseline to beat.

Kept out of the library on purpose: it exists so every speed claim about `rrnet.train` is a
ratio measured in one run on one machine. Per epoch it re-encodes the four sentences and
rebuilds both graphs (the official dataset's `sample`); per pair step it VAE-encodes both
exemplar images, runs the graph network once per side, and calls the UNet twice (own images,
then swapped images), all in fp32. It draws random numbers in the same order as `rrnet.train`,
so with one seed both compute the same loss and gradients.
"""

from __future__ import annotations

import random

import torch

from rrnet.data import RelationSpec, load_images
from rrnet.losses import denoising_target, relation_compelling_loss, sample_timestep
from rrnet.rectifier import RelationRectifier, Triplet, add_at_eot, encode_prompt
from rrnet.train import PAIR_STEPS, TrainConfig, default_resolution, freeze

SIDE_GRAPH = {"prompt": (0, 0), "swapped": (1, 0), "object_a": (0, 1), "object_b": (1, 1)}


class ReferenceTrainer:
    """Official-style training state: images in memory, everything else recomputed."""

    def __init__(self, pipe, rectifier: RelationRectifier, spec: RelationSpec, config: TrainConfig) -> None:
        from diffusers import DDPMScheduler

        freeze(pipe)
        self.pipe, self.rectifier, self.config = pipe, rectifier, config
        resolution = config.resolution or default_resolution(pipe)
        self.images = {
            "prompt": load_images(spec.images_prompt, resolution),
            "swapped": load_images(spec.images_swapped, resolution),
            "object_a": load_images(spec.images_a, resolution),
            "object_b": load_images(spec.images_b, resolution),
        }
        self.triplet = Triplet(spec.object_a, spec.relation, spec.object_b)
        self.sentences = {
            "prompt": spec.prompt, "swapped": spec.swapped_prompt,
            "object_a": rectifier.object_sentence(spec.object_a), "object_b": rectifier.object_sentence(spec.object_b),
        }
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.optimizer = torch.optim.AdamW(rectifier.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.picker = random.Random(config.seed)

    def sample_epoch(self) -> tuple[dict, list, dict]:
        """Encode the sentences, build both graphs, pick one image per folder (as the official `sample`)."""
        encoded = {k: encode_prompt(self.pipe, s) for k, s in self.sentences.items()}
        graphs = [
            self.rectifier.build_graph(self.pipe, self.triplet, encoded["prompt"], encoded["object_a"]),
            self.rectifier.build_graph(self.pipe, self.triplet.swapped(), encoded["swapped"], encoded["object_b"]),
        ]
        chosen = {k: self.picker.randrange(len(v)) for k, v in self.images.items()}
        return encoded, graphs, chosen

    def pair_loss(self, pair: tuple[str, str], encoded: dict, graphs: list, chosen: dict):
        pipe, config, gen = self.pipe, self.config, self.generator
        deltas = []
        for name in pair:  # the graph network runs once per side
            graph, adjust = SIDE_GRAPH[name]
            delta = self.rectifier.adjust_vectors([graphs[graph]])[0, adjust]
            if name.startswith("object_") and config.disentangle_noise:
                delta = delta + config.disentangle_noise * torch.randn(delta.shape, generator=gen).to(delta.device)
            deltas.append(delta)
        embeds = torch.stack([encoded[n].hidden for n in pair])
        eots = torch.tensor([encoded[n].tokens.eot_index for n in pair])
        cond = add_at_eot(embeds, eots, torch.stack(deltas))
        latents = []
        for name in pair:  # VAE-encode the exemplar at every step
            image = self.images[name][chosen[name] : chosen[name] + 1].to(pipe.vae.device)
            dist = pipe.vae.encode(image).latent_dist
            latents.append(dist.sample(gen)[0] * pipe.vae.config.scaling_factor)
        own = torch.stack(latents)
        other = own.flip(0)
        noise = torch.randn(own.shape, generator=gen).to(own.device)
        t = sample_timestep(self.noise_scheduler.config.num_train_timesteps, gen, config.importance_sampling)
        t = t.to(own.device).expand(2)
        sched = self.noise_scheduler
        pred_own = pipe.unet(sched.add_noise(own, noise, t), t, encoder_hidden_states=cond).sample
        pred_other = pipe.unet(sched.add_noise(other, noise, t), t, encoder_hidden_states=cond).sample
        return relation_compelling_loss(pred_own, denoising_target(sched, own, noise, t), pred_other,
                                        denoising_target(sched, other, noise, t), config.positive_weight, config.negative_weight)

    def epoch(self) -> float:
        encoded, graphs, chosen = self.sample_epoch()
        losses = []
        for pair in PAIR_STEPS:
            result = self.pair_loss(pair, encoded, graphs, chosen)
            self.optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
            self.optimizer.step()
            losses.append(result.loss.item())
        return sum(losses) / len(losses)
