"""The relation graph: a directed, typed graph built from one triplet (subject, relation, object).

Node types: `object` (0 = subject, 1 = object), `relation` (0), `adjust` (0 = the prompt's adjust
node, 1 = the object-sentence adjust node). Edges, as in the official RRNet model:
subject->relation, relation->object, subject->adjust0, object->adjust0, relation->adjust0,
subject->adjust1 (the object sentence "this is a photo of {subject}"), and object self-loops.
Swapping subject and object changes which edges exist, which is what lets the network tell
"A R B" from "B R A" even though the bag of words is the same.
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

_EDGES: dict[tuple[str, str, str], list[tuple[int, int]]] = {
    (OBJECT, "to_relation", RELATION): [(SUBJECT, 0)],
    (RELATION, "to_object", OBJECT): [(0, TARGET)],
    (OBJECT, "to_adjust", ADJUST): [
        (SUBJECT, PROMPT_ADJUST),
        (TARGET, PROMPT_ADJUST),
        (SUBJECT, OBJECT_SENTENCE_ADJUST),
    ],
    (RELATION, "to_adjust", ADJUST): [(0, PROMPT_ADJUST)],
    (OBJECT, "self_loop", OBJECT): [(SUBJECT, SUBJECT), (TARGET, TARGET)],
}


def relation_graph(
    subject: torch.Tensor,
    relation: torch.Tensor,
    target: torch.Tensor,
    prompt_eot: torch.Tensor,
    object_sentence_eot: torch.Tensor,
) -> HeteroData:
    """One graph for the prompt "subject relation target"; all features are 1-D vectors of width D."""
    data = HeteroData()
    data[OBJECT].x = torch.stack([subject, target])
    data[RELATION].x = relation.unsqueeze(0)
    data[ADJUST].x = torch.stack([prompt_eot, object_sentence_eot])
    for edge_type, pairs in _EDGES.items():
        data[edge_type].edge_index = torch.tensor(pairs, dtype=torch.long).t().contiguous()
    return data


def batch_graphs(graphs: list[HeteroData]) -> HeteroData:
    """Batch several relation graphs into one disjoint graph (PyG `Batch`), adjust nodes in order."""
    return Batch.from_data_list(graphs)
