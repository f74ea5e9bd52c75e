"""Training items made ready: a relation folder or a several-relation scene, encoded once.

Everything training reads that never changes (the frozen text encoder's outputs, the graphs
built from them, the exemplars' latent statistics) is computed here before the first step, so
the training loop only samples latents and timesteps.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, field, replace
from typing import TYPE_CHECKING

import torch
from torch_geometric.data import Batch

from rrnet.backbones.denoising import default_resolution, latent_distribution
from rrnet.data import RelationSpec, load_images
from rrnet.graph import OBJECT_SENTENCE_ADJUST, PROMPT_ADJUST, batch_graphs
from rrnet.rectifier import EncodedPrompt, RelationRectifier, Triplet, encode_prompt

if TYPE_CHECKING:
    from rrnet.train import TrainConfig

# one side's place in a prepared item: (graph, adjust node, exemplar image paths, delta noise)
SideLayout = tuple[int, int, list, float]

PAIR_STEPS: tuple[tuple[str, str], ...] = (
    ("prompt", "swapped"),
    ("prompt", "object_a"),
    ("prompt", "object_b"),
    ("swapped", "object_b"),
    ("swapped", "object_a"),
)


@dataclass
class Side:
    """One side of a pair step: a sentence, the graph and adjust node that edit it, its images."""

    name: str
    encoded: EncodedPrompt
    graph: int
    adjust: int
    latent_mean: torch.Tensor
    latent_std: torch.Tensor
    delta_noise: float = 0.0
    images: torch.Tensor | None = None  # kept only when latents are not cached


@dataclass
class PreparedRelation:
    """Everything frozen that training reads: encoded sentences, graphs, cached latent statistics."""

    triplet: Triplet
    graphs: list
    sides: dict[str, Side] = field(default_factory=dict)
    steps: tuple[tuple[str, str], ...] = PAIR_STEPS  # its pair steps, in epoch order
    name: str = ""
    batched: Batch = field(init=False, repr=False)  # the graphs batched once, not at every step

    def __post_init__(self) -> None:
        self.batched = batch_graphs(self.graphs)


def encode_sentences(pipe, rectifier: RelationRectifier, triplet: Triplet, sentences: dict[str, str]):
    """Text-encoder outputs of the four sentences and the A-R-B / B-R-A graphs built from them."""
    encoded = {k: encode_prompt(pipe, s) for k, s in sentences.items()}
    graphs = [
        rectifier.build_graph(pipe, triplet, encoded["prompt"], encoded["object_a"]),
        rectifier.build_graph(pipe, triplet.swapped(), encoded["swapped"], encoded["object_b"]),
    ]
    return encoded, graphs


def add_sides(pipe, prepared: PreparedRelation, layout: dict[str, SideLayout], encoded: dict[str, EncodedPrompt],
              config: TrainConfig) -> None:
    """Load each side's exemplars and keep their latent statistics (and the images themselves
    when latents are not cached, to be encoded again at every step)."""
    resolution = config.resolution or default_resolution(pipe)
    for name, (graph, adjust, paths, noise) in layout.items():
        images = load_images(paths, resolution)
        mean, std = latent_distribution(pipe, images)
        prepared.sides[name] = Side(name, encoded[name], graph, adjust, mean, std, noise,
                                    None if config.cache_latents else images)


def prepare_relation(pipe, rectifier: RelationRectifier, spec: RelationSpec, config: TrainConfig) -> PreparedRelation:
    """Encode the four sentences, build the A-R-B and B-R-A graphs and cache image latents."""
    triplet = Triplet(spec.object_a, spec.relation, spec.object_b)
    sentences = {
        "prompt": spec.prompt,
        "swapped": spec.swapped_prompt,
        "object_a": rectifier.object_sentence(spec.object_a),
        "object_b": rectifier.object_sentence(spec.object_b),
    }
    encoded, graphs = encode_sentences(pipe, rectifier, triplet, sentences)
    layout = {  # side -> (graph, adjust node, images, delta noise)
        "prompt": (0, PROMPT_ADJUST, spec.images_prompt, 0.0),
        "swapped": (1, PROMPT_ADJUST, spec.images_swapped, 0.0),
        "object_a": (0, OBJECT_SENTENCE_ADJUST, spec.images_a, config.disentangle_noise),
        "object_b": (1, OBJECT_SENTENCE_ADJUST, spec.images_b, config.disentangle_noise),
    }
    prepared = PreparedRelation(triplet=triplet, graphs=graphs, name=" ".join(astuple(triplet)))
    add_sides(pipe, prepared, layout, encoded, config)
    return prepared


def scene_pair_steps(n_relations: int, disentangle: bool) -> tuple[tuple[str, str], ...]:
    """A several-relation prompt's pair steps: against each one-relation swap (the negatives swap one
    relation's objects at a time), then the object-sentence steps of the first relation's objects."""
    swaps = tuple(("prompt", f"swapped_{k}") for k in range(n_relations))
    objects = (("prompt", "object_a"), ("prompt", "object_b"), ("swapped_0", "object_b"))
    return swaps + objects if disentangle else swaps


def prepare_scene(pipe, rectifier: RelationRectifier, scene, config: TrainConfig) -> PreparedRelation:
    """A prompt stating several relations: one joint graph for the prompt and one per one-relation
    swap; the object sentences are those of the first relation's two objects."""
    relations = [Triplet(*t) for t in scene.relations]
    a, b = relations[0].object_a, relations[0].object_b
    swapped = [relations[:k] + [relations[k].swapped()] + relations[k + 1:] for k in range(len(relations))]
    encoded = {"prompt": encode_prompt(pipe, scene.prompt), "object_a": encode_prompt(pipe, rectifier.object_sentence(a)),
               "object_b": encode_prompt(pipe, rectifier.object_sentence(b))}
    graphs = [rectifier.build_prompt_graph(pipe, relations, encoded["prompt"], encoded["object_a"])]
    layout = {"prompt": (0, PROMPT_ADJUST, scene.images_prompt, 0.0)}
    for k, (text, images) in enumerate(zip(scene.swapped_prompts, scene.images_swapped)):
        encoded[f"swapped_{k}"] = enc = encode_prompt(pipe, text)
        sentence = encoded["object_b"] if k == 0 else encoded["object_a"]  # each graph's first subject
        graphs.append(rectifier.build_prompt_graph(pipe, swapped[k], enc, sentence))
        layout[f"swapped_{k}"] = (k + 1, PROMPT_ADJUST, images, 0.0)
    layout["object_a"] = (0, OBJECT_SENTENCE_ADJUST, scene.object_images(a), config.disentangle_noise)
    layout["object_b"] = (1, OBJECT_SENTENCE_ADJUST, scene.object_images(b), config.disentangle_noise)
    prepared = PreparedRelation(triplet=relations[0], graphs=graphs, name=scene.prompt,
                                steps=scene_pair_steps(len(relations), config.disentangle))
    add_sides(pipe, prepared, layout, encoded, config)
    return prepared


def prepare_item(pipe, rectifier: RelationRectifier, item, config: TrainConfig) -> PreparedRelation:
    """A relation folder or a several-relation prompt, ready for training."""
    if isinstance(item, RelationSpec):
        prepared = prepare_relation(pipe, rectifier, item, config)
        prepared.steps = PAIR_STEPS if config.disentangle else PAIR_STEPS[:1]
        return prepared
    return prepare_scene(pipe, rectifier, item, config)


def refresh_text(pipe, rectifier: RelationRectifier, prepared: PreparedRelation) -> PreparedRelation:
    """Re-run the frozen text encoder and rebuild the graphs (the uncached path; same values)."""
    sentences = {name: side.encoded.tokens.prompt for name, side in prepared.sides.items()}
    encoded, graphs = encode_sentences(pipe, rectifier, prepared.triplet, sentences)
    sides = {name: replace(side, encoded=encoded[name]) for name, side in prepared.sides.items()}
    return PreparedRelation(triplet=prepared.triplet, graphs=graphs, sides=sides)


def item_triplets(item) -> list[tuple[str, str, str]]:
    """The (A, R, B) a training item states: one for a relation folder, several for a scene."""
    if isinstance(item, RelationSpec):
        return [(item.object_a, item.relation, item.object_b)]
    return [tuple(t) for t in item.relations]


def item_prompt_pairs(item) -> list[tuple[str, str]]:
    """(prompt, swapped prompt) pairs of a training item: a scene has one per relation."""
    if isinstance(item, RelationSpec):
        return [(item.prompt, item.swapped_prompt)]
    return [(item.prompt, swapped) for swapped in item.swapped_prompts]
