"""The PyG HGCN computes exactly the official (DGL) RRNet graph network.

The reference below is written from the DGL `GATConv` + `HeteroGraphConv(aggregate="sum")`
semantics: one projection per edge type for source and destination, attention
leaky_relu(a_l . Wh_src + a_r . Wh_dst) soft-maxed per edge type, destination and head, the
per-type bias added to every destination node (even one with no incoming edge of that type),
layer 1 summed over types then ReLU with heads concatenated, layer 2 heads averaged.
"""

import torch
import torch.nn.functional as F

from rrnet.graph import batch_graphs, relation_graph
from rrnet.hgcn import HGCN


def _gat_reference(conv, x_src, x_dst, edge_index, heads):
    w = conv.lin.weight
    out_ch = w.shape[0] // heads
    hs = (x_src @ w.t()).view(-1, heads, out_ch)
    hd = (x_dst @ w.t()).view(-1, heads, out_ch)
    el = (hs * conv.att_src.view(1, heads, out_ch)).sum(-1)
    er = (hd * conv.att_dst.view(1, heads, out_ch)).sum(-1)
    out = torch.zeros(x_dst.shape[0], heads, out_ch)
    src, dst = edge_index
    for node in range(x_dst.shape[0]):
        incoming = (dst == node).nonzero().flatten()
        if len(incoming):
            scores = F.leaky_relu(el[src[incoming]] + er[node], 0.2)  # (E_in, H)
            weights = scores.softmax(0)
            out[node] = (weights.unsqueeze(-1) * hs[src[incoming]]).sum(0)
    bias = conv.bias.view(1, heads, out_ch) if conv.concat else conv.bias.view(1, 1, out_ch).expand(1, heads, out_ch)
    return out + bias  # per-head bias on every destination node, as DGL adds it


def _reference_forward(model, graph, heads):
    h = dict(graph.x_dict)
    for i, layer in enumerate(model.layers):
        last = i == len(model.layers) - 1
        new = {}
        for edge_type, conv in layer.convs.items():
            src, _, dst = edge_type
            y = _gat_reference(conv, h[src], h[dst], graph[edge_type].edge_index, heads)
            new[dst] = new.get(dst, 0) + y
        h = {k: (v.mean(1) if last else F.relu(v).flatten(1)) for k, v in new.items()}
    return h["adjust"].view(-1, 2, h["adjust"].shape[-1])


def test_pyg_hgcn_matches_the_official_dgl_semantics():
    torch.manual_seed(0)
    d, heads = 12, 2
    model = HGCN(d, d, hidden=8, heads=heads)
    for p in model.parameters():  # biases start at zero: randomise everything so they count
        torch.nn.init.normal_(p, std=0.5)
    graphs = [relation_graph(*torch.randn(5, d)) for _ in range(3)]
    batch = batch_graphs(graphs)
    expected = _reference_forward(model, batch, heads)
    assert torch.allclose(model.adjust_vectors(batch), expected, atol=1e-5)
