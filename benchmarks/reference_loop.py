"""The official RRNet training step, written from the paper and the official code's semantics.

Kept out of the library on purpose, and independent of it: it builds the graph, reads the word
features, edits the EOT, draws timesteps and computes the loss itself (only the graph network's
weights, the frozen diffusers models and the data loader are shared), so comparing it with
`rrnet.train` catches a mistake in any of those library pieces, and every speed claim about
`rrnet.train` is a ratio measured in one run on one machine.

Per epoch it re-encodes the four sentences and rebuilds both graphs (the official dataset's
`sample`); per pair step it VAE-encodes both exemplar images, runs the graph network once per
side, and calls the UNet twice (own images, then the other side's images), all in fp32. It
draws random numbers in the same order as `rrnet.train`, so with one seed both compute the same
loss and gradients.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch_geometric.data import HeteroData

from rrnet.data import RelationSpec, load_images

# The official recipe (DESIGN.md): five pair steps, loss weights, object-sentence noise, p(t).
PAIR_STEPS = (("prompt", "swapped"), ("prompt", "object_a"), ("prompt", "object_b"),
              ("swapped", "object_b"), ("swapped", "object_a"))
POSITIVE_WEIGHT, NEGATIVE_WEIGHT, COSINE_STRENGTH = 10.0, 2.0, 0.5
OBJECT_SENTENCE = "this is a photo of {}"
# side -> (graph: 0 = A-R-B, 1 = B-R-A; adjust node: 0 = prompt, 1 = object sentence)
SIDE_GRAPH = {"prompt": (0, 0), "swapped": (1, 0), "object_a": (0, 1), "object_b": (1, 1)}


def hidden_states(pipe, sentence: str) -> tuple[torch.Tensor, int]:
    """The frozen text encoder's output (77, D) and the position of the first end-of-text token."""
    ids = pipe.tokenizer(sentence, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True).input_ids
    with torch.no_grad():
        embeds, _ = pipe.encode_prompt(sentence, pipe.text_encoder.device, 1, False)
    return embeds[0].float(), ids.index(pipe.tokenizer.eos_token_id)


def word_feature(pipe, word: str) -> torch.Tensor:
    """Mean token-embedding-table row of the word's BPE tokens (the official node feature)."""
    ids = pipe.tokenizer(word, add_special_tokens=False).input_ids
    table = pipe.text_encoder.get_input_embeddings().weight
    return table[torch.tensor(ids, device=table.device)].detach().float().mean(0)


def official_graph(subject, relation, target, prompt_eot, sentence_eot) -> HeteroData:
    """Nodes: object (0 subject, 1 target), relation, adjust (0 prompt, 1 object sentence). Edges:
    subject->relation, relation->target, both objects and the relation->prompt adjust,
    subject->object-sentence adjust, object self-loops."""
    g = HeteroData()
    g["object"].x = torch.stack([subject, target])
    g["relation"].x = relation[None]
    g["adjust"].x = torch.stack([prompt_eot, sentence_eot])
    edges = {("object", "to_relation", "relation"): [[0], [0]],
             ("relation", "to_object", "object"): [[0], [1]],
             ("object", "to_adjust", "adjust"): [[0, 1, 0], [0, 0, 1]],
             ("relation", "to_adjust", "adjust"): [[0], [0]],
             ("object", "self_loop", "object"): [[0, 1], [0, 1]]}
    for key, index in edges.items():
        g[key].edge_index = torch.tensor(index, dtype=torch.long)
    return g


def draw_timestep(num_train_timesteps: int, generator: torch.Generator, importance: bool) -> torch.Tensor:
    if not importance:
        return torch.randint(0, num_train_timesteps, (1,), generator=generator)
    t = torch.arange(num_train_timesteps, dtype=torch.float64)
    weights = 1.0 - COSINE_STRENGTH * torch.cos(math.pi * t / num_train_timesteps)
    return torch.multinomial((weights / weights.sum()).float(), 1, generator=generator)


def target_of(scheduler, latents, noise, t):
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    return noise


class ReferenceTrainer:
    """Official-style training state: images in memory, everything else recomputed."""

    def __init__(self, pipe, rectifier, spec: RelationSpec, config) -> None:
        from diffusers import DDPMScheduler

        for module in (pipe.text_encoder, pipe.unet, pipe.vae):
            module.requires_grad_(False)
        self.pipe, self.rectifier, self.config = pipe, rectifier, config
        resolution = config.resolution or int(pipe.unet.config.sample_size * pipe.vae_scale_factor)
        self.images = {
            "prompt": load_images(spec.images_prompt, resolution),
            "swapped": load_images(spec.images_swapped, resolution),
            "object_a": load_images(spec.images_a, resolution),
            "object_b": load_images(spec.images_b, resolution),
        }
        self.words = (spec.object_a, spec.relation, spec.object_b)
        self.sentences = {
            "prompt": spec.prompt, "swapped": spec.swapped_prompt,
            "object_a": OBJECT_SENTENCE.format(spec.object_a), "object_b": OBJECT_SENTENCE.format(spec.object_b),
        }
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.optimizer = torch.optim.AdamW(rectifier.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.picker = random.Random(config.seed)

    def sample_epoch(self) -> tuple[dict, list, dict]:
        """Encode the sentences, build both graphs, pick one image per folder (as the official `sample`)."""
        encoded = {k: hidden_states(self.pipe, s) for k, s in self.sentences.items()}
        a, r, b = (word_feature(self.pipe, w) for w in self.words)
        eot = {k: h[i] for k, (h, i) in encoded.items()}
        graphs = [official_graph(a, r, b, eot["prompt"], eot["object_a"]),
                  official_graph(b, r, a, eot["swapped"], eot["object_b"])]
        chosen = {k: self.picker.randrange(len(v)) for k, v in self.images.items()}
        return encoded, graphs, chosen

    def pair_loss(self, pair: tuple[str, str], encoded: dict, graphs: list, chosen: dict) -> torch.Tensor:
        pipe, config, gen = self.pipe, self.config, self.generator
        device = next(self.rectifier.parameters()).device
        conds = []
        for name in pair:  # the graph network runs once per side; its delta goes to the first EOT only
            graph, adjust = SIDE_GRAPH[name]
            g = graphs[graph].to(device)
            delta = self.rectifier.hgcn(g.x_dict, g.edge_index_dict)["adjust"][adjust]
            if name.startswith("object_") and config.disentangle_noise:
                delta = delta + config.disentangle_noise * torch.randn(delta.shape, generator=gen).to(delta.device)
            hidden, eot = encoded[name]
            mask = F.one_hot(torch.tensor(eot), hidden.shape[0]).to(hidden)[:, None]
            conds.append(hidden + mask * delta[None, :])
        cond = torch.stack(conds)
        latents = []
        for name in pair:  # VAE-encode the exemplar at every step
            image = self.images[name][chosen[name] : chosen[name] + 1].to(pipe.vae.device)
            dist = pipe.vae.encode(image).latent_dist
            latents.append(dist.sample(gen)[0] * pipe.vae.config.scaling_factor)
        own = torch.stack(latents)
        other = torch.stack([latents[1], latents[0]])  # each side's negative: the other side's image
        noise = torch.randn(own.shape, generator=gen).to(own.device)
        sched = self.noise_scheduler
        t = draw_timestep(sched.config.num_train_timesteps, gen, config.importance_sampling).to(own.device).expand(2)
        pred_own = pipe.unet(sched.add_noise(own, noise, t), t, encoder_hidden_states=cond).sample
        pred_other = pipe.unet(sched.add_noise(other, noise, t), t, encoder_hidden_states=cond).sample
        positive = ((pred_own - target_of(sched, own, noise, t)) ** 2).mean()
        negative = ((pred_other - target_of(sched, other, noise, t)) ** 2).mean()
        return POSITIVE_WEIGHT * positive - NEGATIVE_WEIGHT * negative

    def epoch(self) -> float:
        encoded, graphs, chosen = self.sample_epoch()
        losses = []
        for pair in PAIR_STEPS:
            loss = self.pair_loss(pair, encoded, graphs, chosen)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
        return sum(losses) / len(losses)
