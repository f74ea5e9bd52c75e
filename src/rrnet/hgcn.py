"""The heterogeneous graph attention network that turns a relation graph into adjustment vectors.

It mirrors the official RRNet model in PyTorch Geometric: each layer is a `HeteroConv` with one
`GATConv` per edge type, summed over edge types. Hidden layers concatenate their heads and apply
ReLU; the last layer averages its heads and has no activation. No residuals, no dropout, and no
implicit self-loops (object self-loops are an explicit edge type with their own weights).
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GATConv, HeteroConv

from rrnet.graph import ADJUST, EDGE_TYPES


class HGCN(nn.Module):
    """`num_layers` hetero GAT layers: width `in_dim` -> `hidden` x `heads` ... -> `out_dim`."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int = 512,
        heads: int = 2,
        num_layers: int = 2,
        edge_types: tuple[tuple[str, str, str], ...] = EDGE_TYPES,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        self.layers = nn.ModuleList()
        width = in_dim
        for i in range(num_layers):
            last = i == num_layers - 1
            channels = out_dim if last else hidden
            convs = {
                et: GATConv(width, channels, heads=heads, concat=not last, add_self_loops=False)
                for et in edge_types
            }
            self.layers.append(HeteroConv(convs, aggr="sum"))
            width = channels * heads

    def forward(self, x_dict: dict[str, torch.Tensor], edge_index_dict: dict) -> dict[str, torch.Tensor]:
        """Node features of every type after the last layer."""
        h = x_dict
        for i, layer in enumerate(self.layers):
            h = layer(h, edge_index_dict)
            if i < len(self.layers) - 1:
                h = {k: torch.relu(v) for k, v in h.items()}
        return h

    def adjust_vectors(self, graph) -> torch.Tensor:
        """Output at the adjust nodes, shaped (num_graphs, 2, out_dim): [prompt, object sentence]."""
        out = self(graph.x_dict, graph.edge_index_dict)[ADJUST]
        return out.view(-1, 2, out.shape[-1])
