"""The relation graph: a directed, typed graph built from a prompt's triplets (subject, relation, object).

Node types: `object` (0 = subject, 1 = object), `relation` (0), `adjust` (0 = the prompt's adjust
node, 1 = the object-sentence adjust node). Edges, as in the official RRNet model:
subject->relation, relation->object, subject->adjust0, object->adjust0, relation->adjust0,
subject->adjust1 (the object sentence "this is a photo of {subject}"), and object self-loops.
Swapping subject and object changes which edges exist, which is what lets the network tell
"A R B" from "B R A" even though the bag of words is the same.

A prompt with several relations gives one graph: one object node per distinct object (an object
named twice is one node), one relation node per relation with its own subject->relation->object
edges, every object and relation feeding the one prompt adjust node, and the first relation's
subject feeding the object-sentence adjust node. With one relation it is exactly the graph above.
"""

from __future__ import annotations

import torch
from torch_geometric.data import Batch, HeteroData

OBJECT, RELATION, ADJUST = "object", "relation", "adjust"
PROMPT_ADJUST, OBJECT_SENTENCE_ADJUST = 0, 1
SUBJECT, TARGET = 0, 1

EDGE_TYPES: tuple[tuple[str, str, str], ...] = (
    (OBJECT, "to_relation", RELATION),
    (RELATION, "to_object", OBJECT),
    (OBJECT, "to_adjust", ADJUST),
    (RELATION, "to_adjust", ADJUST),
    (OBJECT, "self_loop", OBJECT),
)

def prompt_graph(
    objects: list[torch.Tensor],
    relations: list[tuple[int, torch.Tensor, int]],
    prompt_eot: torch.Tensor,
    object_sentence_eot: torch.Tensor,
) -> HeteroData:
    """One graph for a prompt stating several relations: `objects` are the distinct objects' features,
    `relations` (subject index, relation feature, object index) in prompt order."""
    if not relations:
        raise ValueError("a prompt graph needs at least one relation")
    data = HeteroData()
    data[OBJECT].x = torch.stack(objects)
    data[RELATION].x = torch.stack([feature for _, feature, _ in relations])
    data[ADJUST].x = torch.stack([prompt_eot, object_sentence_eot])
    edges = {
        (OBJECT, "to_relation", RELATION): [(s, r) for r, (s, _, _) in enumerate(relations)],
        (RELATION, "to_object", OBJECT): [(r, o) for r, (_, _, o) in enumerate(relations)],
        (OBJECT, "to_adjust", ADJUST): [(o, PROMPT_ADJUST) for o in range(len(objects))]
        + [(relations[0][0], OBJECT_SENTENCE_ADJUST)],
        (RELATION, "to_adjust", ADJUST): [(r, PROMPT_ADJUST) for r in range(len(relations))],
        (OBJECT, "self_loop", OBJECT): [(o, o) for o in range(len(objects))],
    }
    for edge_type, pairs in edges.items():
        data[edge_type].edge_index = torch.tensor(pairs, dtype=torch.long).t().contiguous()
    return data


def relation_graph(
    subject: torch.Tensor,
    relation: torch.Tensor,
    target: torch.Tensor,
    prompt_eot: torch.Tensor,
    object_sentence_eot: torch.Tensor,
) -> HeteroData:
    """One graph for the prompt "subject relation target"; all features are 1-D vectors of width D."""
    return prompt_graph([subject, target], [(SUBJECT, relation, TARGET)], prompt_eot, object_sentence_eot)


def mirrored(graph: HeteroData) -> HeteroData:
    """The same graph with every relation read the other way round (B R A for A R B): the edges
    into and out of each relation node trade places; features, including the EOT, stay as they are.

    Works on one graph or a `Batch` (edges of each relation are stored in relation order)."""
    out = graph.clone()
    out[OBJECT, "to_relation", RELATION].edge_index = graph[RELATION, "to_object", OBJECT].edge_index.flip(0)
    out[RELATION, "to_object", OBJECT].edge_index = graph[OBJECT, "to_relation", RELATION].edge_index.flip(0)
    return out


def batch_graphs(graphs: list[HeteroData]) -> HeteroData:
    """Batch several relation graphs into one disjoint graph (PyG `Batch`), adjust nodes in order."""
    return Batch.from_data_list(graphs)
