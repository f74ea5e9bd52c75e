"""The collapse gate: a rectifier edits only relations whose direction the text encoder loses."""

import torch

from rrnet.rectifier import RectifierConfig, RelationRectifier, Triplet, encode_prompt

torch.set_num_threads(1)


def _world_rectifier(width: int) -> RelationRectifier:
    torch.manual_seed(0)
    cfg = RectifierConfig(text_width=width, hidden=16, heads=2, joint_relations=True,
                          triplets=[{"object_a": "red circle", "relation": "above", "object_b": "blue square"},
                                    {"object_a": "red circle", "relation": "left of", "object_b": "green triangle"}])
    model = RelationRectifier(cfg)
    for p in model.parameters():  # GAT biases start at zero: make the edit visible
        torch.nn.init.normal_(p, std=0.2)
    return model


def test_the_gate_edits_collapsed_relations_and_leaves_ordered_ones(world_pipe):
    width = world_pipe.text_encoder.config.hidden_size
    rect = _world_rectifier(width)
    # computed from the shipped text encoder: a collapsed pair and an order-aware (control) pair
    assert rect.swap_cosine(world_pipe, Triplet("red circle", "above", "blue square")) > 0.999
    assert rect.swap_cosine(world_pipe, Triplet("red circle", "above", "purple cross")) < 0.9
    base = lambda p: encode_prompt(world_pipe, p).hidden[None]
    with torch.no_grad():
        control = "a red circle above a purple cross and the red circle left of a pink wedge"
        assert torch.equal(rect.prompt_embeds(world_pipe, control, alpha=1.0, collapse_gate=0.99), base(control))
        assert not torch.equal(rect.prompt_embeds(world_pipe, control, alpha=1.0), base(control))
        collapsed = "a red circle above a blue square and the red circle left of a green triangle"
        assert torch.equal(rect.prompt_embeds(world_pipe, collapsed, alpha=1.0, collapse_gate=0.99),
                           rect.prompt_embeds(world_pipe, collapsed, alpha=1.0))
        # a mixed caption: only its collapsed relation is edited (one-relation graph of that triplet)
        mixed = "a red circle above a blue square and the red circle left of a pink wedge"
        only_collapsed = rect.prompt_embeds(world_pipe, mixed, alpha=1.0, triplet=("red circle", "above", "blue square"))
        assert torch.allclose(rect.prompt_embeds(world_pipe, mixed, alpha=1.0, collapse_gate=0.99), only_collapsed)
