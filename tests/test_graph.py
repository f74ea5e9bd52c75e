import torch

from rrnet.graph import ADJUST, OBJECT, RELATION, batch_graphs, relation_graph
from rrnet.hgcn import HGCN


def _features(d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(d, generator=g) for k in ("A", "R", "B", "eot", "obj")}


def _edges(graph):
    out = {}
    for (src, rel, dst), store in graph.edge_items():
        out[(src, rel, dst)] = sorted(map(tuple, store.edge_index.t().tolist()))
    return out


def test_edges_follow_the_direction_of_the_relation():
    f = _features()
    arb = relation_graph(f["A"], f["R"], f["B"], f["eot"], f["obj"])
    bra = relation_graph(f["B"], f["R"], f["A"], f["eot"], f["obj"])
    e = _edges(arb)
    assert e[(OBJECT, "to_relation", RELATION)] == [(0, 0)]  # A -> R
    assert e[(RELATION, "to_object", OBJECT)] == [(0, 1)]  # R -> B
    assert e[(OBJECT, "to_adjust", ADJUST)] == [(0, 0), (0, 1), (1, 0)]  # A,B -> prompt; A -> object sentence
    assert e[(RELATION, "to_adjust", ADJUST)] == [(0, 0)]
    assert e[(OBJECT, "self_loop", OBJECT)] == [(0, 0), (1, 1)]
    # same topology, but node 0 (the subject) holds A in one graph and B in the other
    assert torch.equal(arb[OBJECT].x[0], f["A"]) and torch.equal(bra[OBJECT].x[0], f["B"])
    assert torch.equal(arb[OBJECT].x[1], bra[OBJECT].x[0])


def test_batching_keeps_graphs_disjoint_and_ordered():
    f, g = _features(seed=0), _features(seed=1)
    graphs = [relation_graph(f["A"], f["R"], f["B"], f["eot"], f["obj"]),
              relation_graph(g["A"], g["R"], g["B"], g["eot"], g["obj"])]
    batch = batch_graphs(graphs)
    assert batch[OBJECT].x.shape == (4, 8) and batch[ADJUST].x.shape == (4, 8)
    assert batch[(RELATION, "to_object", OBJECT)].edge_index.tolist() == [[0, 1], [1, 3]]
    model = HGCN(8, 8, hidden=16, heads=2)
    batched = model.adjust_vectors(batch)
    single = torch.cat([model.adjust_vectors(batch_graphs([gr])) for gr in graphs])
    assert torch.allclose(batched, single, atol=1e-6)


def test_hgcn_output_shapes_and_configurable_architecture():
    f = _features(d=12)
    graph = batch_graphs([relation_graph(f["A"], f["R"], f["B"], f["eot"], f["obj"])] * 3)
    for layers, hidden, heads in [(2, 16, 2), (1, 8, 1), (3, 10, 4)]:
        model = HGCN(12, 20, hidden=hidden, heads=heads, num_layers=layers)
        assert model.adjust_vectors(graph).shape == (3, 2, 20)
        assert len(model.layers) == layers


def test_direction_changes_the_prompt_adjustment():
    f = _features()
    model = HGCN(8, 8, hidden=16)
    arb = model.adjust_vectors(batch_graphs([relation_graph(f["A"], f["R"], f["B"], f["eot"], f["obj"])]))
    bra = model.adjust_vectors(batch_graphs([relation_graph(f["B"], f["R"], f["A"], f["eot"], f["obj"])]))
    assert not torch.allclose(arb[0, 0], bra[0, 0], atol=1e-4)


def test_object_sentence_adjustment_reads_only_its_object():
    """Without implicit self-loops, the object-sentence node sees only the subject (A -> adjust)."""
    f, g = _features(seed=0), _features(seed=3)
    model = HGCN(8, 8, hidden=16)
    base = model.adjust_vectors(batch_graphs([relation_graph(f["A"], f["R"], f["B"], f["eot"], f["obj"])]))
    other = model.adjust_vectors(batch_graphs([relation_graph(f["A"], g["R"], g["B"], f["eot"], f["obj"])]))
    assert torch.allclose(base[0, 1], other[0, 1], atol=1e-6)
    assert not torch.allclose(base[0, 0], other[0, 0], atol=1e-4)


def test_a_two_relation_prompt_is_one_graph_with_a_shared_object_node():
    """"a red circle above a blue square and a green triangle left of the blue square"."""
    from rrnet.graph import PROMPT_ADJUST, prompt_graph

    g = torch.Generator().manual_seed(1)
    circle, square, triangle, above, left, eot, obj = (torch.randn(8, generator=g) for _ in range(7))
    graph = prompt_graph([circle, square, triangle], [(0, above, 1), (2, left, 1)], eot, obj)
    assert graph[OBJECT].num_nodes == 3 and graph[RELATION].num_nodes == 2 and graph[ADJUST].num_nodes == 2
    e = _edges(graph)
    assert e[(OBJECT, "to_relation", RELATION)] == [(0, 0), (2, 1)]  # circle -> above, triangle -> left of
    assert e[(RELATION, "to_object", OBJECT)] == [(0, 1), (1, 1)]  # both relations point at the one square node
    assert e[(OBJECT, "to_adjust", ADJUST)] == [(0, 0), (0, 1), (1, 0), (2, 0)]  # every object feeds the prompt node
    assert e[(RELATION, "to_adjust", ADJUST)] == [(0, PROMPT_ADJUST), (1, PROMPT_ADJUST)]
    assert e[(OBJECT, "self_loop", OBJECT)] == [(0, 0), (1, 1), (2, 2)]
    hgcn = HGCN(8, 8, hidden=4, heads=2)
    torch.nn.init.normal_(next(iter(hgcn.parameters())), std=0.5)
    out = hgcn.adjust_vectors(batch_graphs([graph, relation_graph(circle, above, square, eot, obj)]))
    assert out.shape == (2, 2, 8) and not torch.allclose(out[0, 0], out[1, 0])  # the second relation counts


def test_one_relation_prompt_graph_is_the_relation_graph():
    from rrnet.graph import prompt_graph

    f = _features()
    single = relation_graph(f["A"], f["R"], f["B"], f["eot"], f["obj"])
    general = prompt_graph([f["A"], f["B"]], [(0, f["R"], 1)], f["eot"], f["obj"])
    assert _edges(single) == _edges(general)
    torch.manual_seed(0)
    hgcn = HGCN(8, 8, hidden=4, heads=2)
    for p in hgcn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    assert torch.equal(hgcn.adjust_vectors(batch_graphs([single])), hgcn.adjust_vectors(batch_graphs([general])))


def test_mirrored_graph_reads_the_relation_the_other_way():
    from rrnet.graph import PROMPT_ADJUST, mirrored

    f = _features()
    arb = relation_graph(f["A"], f["R"], f["B"], f["eot"], f["obj"])
    bra = relation_graph(f["B"], f["R"], f["A"], f["eot"], f["obj"])
    e = _edges(mirrored(arb))
    assert e[(OBJECT, "to_relation", RELATION)] == [(1, 0)] and e[(RELATION, "to_object", OBJECT)] == [(0, 0)]
    assert _edges(arb)[(OBJECT, "to_relation", RELATION)] == [(0, 0)]  # the original is left as it was
    model = HGCN(8, 8, hidden=16, heads=2)
    # the prompt node of the mirrored A-R-B graph sees exactly what the B-R-A graph's does
    mirror = model.adjust_vectors(batch_graphs([mirrored(arb)]))[:, PROMPT_ADJUST]
    assert torch.allclose(mirror, model.adjust_vectors(batch_graphs([bra]))[:, PROMPT_ADJUST], atol=1e-6)
    batch = batch_graphs([arb, bra])
    assert torch.allclose(model.adjust_vectors(mirrored(batch)),
                          torch.cat([model.adjust_vectors(batch_graphs([mirrored(g)])) for g in (arb, bra)]), atol=1e-6)
