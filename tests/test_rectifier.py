import json

import pytest
import torch

from rrnet.errors import CheckpointError, PromptError
from rrnet.rectifier import RectifierConfig, RelationRectifier, add_at_eot, encode_prompt

TRIPLET = {"object_a": "red block", "relation": "above", "object_b": "blue block"}
PROMPTS = ["a red block above a blue block", "a blue block above a red block"]


def _rectifier(width=32, seed=0):
    torch.manual_seed(seed)
    cfg = RectifierConfig(text_width=width, hidden=16, heads=2, triplets=[TRIPLET], prompts=[PROMPTS])
    model = RelationRectifier(cfg)
    for p in model.parameters():  # GAT biases start at zero: make the edit visible
        torch.nn.init.normal_(p, std=0.2)
    return model


def test_edit_touches_only_the_eot_position(tiny_pipe):
    rect = _rectifier()
    base = encode_prompt(tiny_pipe, PROMPTS[0])
    out = rect.prompt_embeds(tiny_pipe, PROMPTS[0], alpha=0.5)[0]
    changed = (out != base.hidden).any(-1).nonzero().flatten().tolist()
    assert changed == [base.tokens.eot_index]
    assert torch.equal(rect.prompt_embeds(tiny_pipe, PROMPTS[0], alpha=0.0)[0], base.hidden)


def test_alpha_scales_the_adjustment(tiny_pipe):
    rect = _rectifier()
    base = encode_prompt(tiny_pipe, PROMPTS[1]).hidden
    d1 = rect.prompt_embeds(tiny_pipe, PROMPTS[1], alpha=0.4)[0] - base
    d2 = rect.prompt_embeds(tiny_pipe, PROMPTS[1], alpha=0.8)[0] - base
    assert torch.allclose(2 * d1, d2, atol=1e-5)


def test_direction_is_read_from_the_prompt(tiny_pipe):
    rect = _rectifier()
    both = rect.prompt_embeds(tiny_pipe, PROMPTS, alpha=1.0)
    eot = encode_prompt(tiny_pipe, PROMPTS[0]).tokens.eot_index
    assert not torch.allclose(both[0, eot], both[1, eot])
    unseen = rect.prompt_embeds(tiny_pipe, "a cat above a dog", triplet=("cat", "above", "dog"))
    assert unseen.shape == both[:1].shape
    # the parser reads the same triplet from the prompt: objects the rectifier never saw
    assert torch.equal(rect.prompt_embeds(tiny_pipe, "a cat above a dog"), unseen)
    assert torch.equal(rect.prompt_embeds(tiny_pipe, "a dog above a cat", triplet=("cat", "above", "dog")),
                       rect.prompt_embeds(tiny_pipe, "a dog above a cat"))


def test_a_prompt_without_a_known_relation_passes_through(tiny_pipe, caplog):
    import logging

    rect = _rectifier()
    prompts = ["a cat next to a dog", PROMPTS[0], "above a blue block"]
    with caplog.at_level(logging.INFO, logger="rrnet.rectifier"):
        out = rect.prompt_embeds(tiny_pipe, prompts, alpha=1.0)
    assert "a cat next to a dog" in caplog.text and "base embedding kept" in caplog.text
    for k in (0, 2):  # exactly the pipeline's own embeddings
        assert torch.equal(out[k], encode_prompt(tiny_pipe, prompts[k]).hidden)
    assert not torch.equal(out[1], encode_prompt(tiny_pipe, prompts[1]).hidden)
    assert torch.equal(out[1], rect.prompt_embeds(tiny_pipe, prompts[1], alpha=1.0)[0])
    with pytest.raises(PromptError, match="no relation this rectifier knows"):
        rect.prompt_embeds(tiny_pipe, prompts, strict=True)


def test_relation_phrases_come_from_the_training_prompts():
    cfg = RectifierConfig(text_width=32, triplets=[{"object_a": "book", "relation": "placed", "object_b": "bowl"}],
                          prompts=[["a book is placed on a bowl", "a bowl is placed on the book"]])
    rect = RelationRectifier(cfg)
    assert rect.relation_phrases() == {"placed": "placed", "is placed on": "placed"}
    assert rect.find_triplet("there is a cup is placed on a plate").object_a == "cup"
    assert rect.find_triplet("a cat next to a dog") is None


def test_add_at_eot_matches_indexing():
    embeds = torch.randn(2, 5, 3)
    delta = torch.randn(2, 3)
    out = add_at_eot(embeds, torch.tensor([1, 3]), delta, 0.5)
    expected = embeds.clone()
    expected[0, 1] += 0.5 * delta[0]
    expected[1, 3] += 0.5 * delta[1]
    assert torch.allclose(out, expected)


def test_save_load_round_trip_gives_identical_outputs(tiny_pipe, tmp_path):
    rect = _rectifier()
    rect.save_pretrained(tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["config.json", "rectifier.safetensors"]
    loaded = RelationRectifier.from_pretrained(tmp_path / "r")
    assert torch.equal(rect.prompt_embeds(tiny_pipe, PROMPTS), loaded.prompt_embeds(tiny_pipe, PROMPTS))
    assert loaded.config.triplets == [TRIPLET]


def test_loading_onto_another_width_is_an_error(tiny_pipe, tmp_path):
    _rectifier(width=64).save_pretrained(tmp_path / "wide")
    wide = RelationRectifier.from_pretrained(tmp_path / "wide")
    with pytest.raises(CheckpointError, match="width 64, this model's is 32"):
        wide.prompt_embeds(tiny_pipe, PROMPTS[0])


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        RelationRectifier.from_pretrained(tmp_path / "missing")
    _rectifier().save_pretrained(tmp_path / "r")
    (tmp_path / "r" / "rectifier.safetensors").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        RelationRectifier.from_pretrained(tmp_path / "r")
    _rectifier().save_pretrained(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    cfg["hidden"] = 24
    (tmp_path / "s" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match"):
        RelationRectifier.from_pretrained(tmp_path / "s")


def test_antisymmetric_rectifier_negates_the_adjustment_when_objects_swap(tiny_pipe):
    from rrnet.graph import OBJECT_SENTENCE_ADJUST, PROMPT_ADJUST
    from rrnet.rectifier import RectifierConfig, RelationRectifier, Triplet, encode_prompt

    width = tiny_pipe.text_encoder.config.hidden_size
    torch.manual_seed(0)
    rect = RelationRectifier(RectifierConfig(text_width=width, hidden=16, heads=2, antisymmetric=True))
    t = Triplet("red block", "above", "blue block")
    prompt = encode_prompt(tiny_pipe, "a red block above a blue block")
    sentence = encode_prompt(tiny_pipe, "this is a photo of red block")
    # the same EOT read both ways (a collapsed pair): the two prompts get opposite adjustments
    out = rect.adjust_vectors([rect.build_graph(tiny_pipe, t, prompt, sentence),
                               rect.build_graph(tiny_pipe, t.swapped(), prompt, sentence)])
    assert out[0, PROMPT_ADJUST].abs().sum() > 0
    assert torch.allclose(out[0, PROMPT_ADJUST], -out[1, PROMPT_ADJUST], atol=1e-6)
    assert not torch.allclose(out[0, OBJECT_SENTENCE_ADJUST], -out[1, OBJECT_SENTENCE_ADJUST], atol=1e-6)
    plain = RelationRectifier(RectifierConfig(text_width=width, hidden=16, heads=2))
    plain.load_state_dict(rect.state_dict())
    both = plain.adjust_vectors([rect.build_graph(tiny_pipe, t, prompt, sentence),
                                 rect.build_graph(tiny_pipe, t.swapped(), prompt, sentence)])
    assert not torch.allclose(both[0, PROMPT_ADJUST], -both[1, PROMPT_ADJUST], atol=1e-3)


def test_triplet_rectifier_gives_each_triplet_its_own_edit_and_sums_relations(tiny_pipe):
    from rrnet.graph import OBJECT_SENTENCE_ADJUST, PROMPT_ADJUST
    from rrnet.rectifier import RectifierConfig, RelationRectifier, Triplet, encode_prompt

    width = tiny_pipe.text_encoder.config.hidden_size
    rect = RelationRectifier(RectifierConfig(text_width=width, hidden=16, adjuster="triplet"))
    sentence = encode_prompt(tiny_pipe, "this is a photo of red circle")

    def delta(t: Triplet, text: str | None = None):
        enc = encode_prompt(tiny_pipe, text or f"a {t.object_a} {t.relation} a {t.object_b}")
        return rect.adjust_vectors([rect.build_graph(tiny_pipe, t, enc, sentence)])[0]

    t = Triplet("red circle", "above", "blue square")
    assert delta(t).abs().sum() == 0  # starts at base
    torch.manual_seed(0)
    torch.nn.init.normal_(rect.triplet.lins[-1].weight)
    ab, ba = delta(t), delta(t.swapped())
    assert ab[PROMPT_ADJUST].abs().sum() > 0
    # no structure: the swap gets an edit of its own, neither the same nor the negated one
    assert not torch.allclose(ab[PROMPT_ADJUST], ba[PROMPT_ADJUST], atol=1e-3)
    assert not torch.allclose(ab[PROMPT_ADJUST], -ba[PROMPT_ADJUST], atol=1e-3)
    assert not torch.allclose(ab[PROMPT_ADJUST], ab[OBJECT_SENTENCE_ADJUST], atol=1e-3)
    # the words are the input, not the EOT
    assert torch.allclose(ab, delta(t, "a blue square above a red circle"), atol=1e-6)
    two = [t, Triplet("green triangle", "left of", "blue square")]
    enc = encode_prompt(tiny_pipe, "a red circle above a blue square and a green triangle left of the blue square")
    joint = rect.adjust_vectors([rect.build_prompt_graph(tiny_pipe, two, enc, sentence)])[0]
    parts = rect.adjust_vectors([rect.build_graph(tiny_pipe, x, enc, sentence) for x in two])
    assert torch.allclose(joint[PROMPT_ADJUST], parts[:, PROMPT_ADJUST].sum(0), atol=1e-5)
    assert torch.allclose(joint[OBJECT_SENTENCE_ADJUST], parts[0, OBJECT_SENTENCE_ADJUST], atol=1e-6)


def test_role_rectifier_is_antisymmetric_additive_and_composes_over_partners(tiny_pipe):
    from rrnet.graph import OBJECT_SENTENCE_ADJUST, PROMPT_ADJUST
    from rrnet.rectifier import RectifierConfig, RelationRectifier, Triplet, encode_prompt

    width = tiny_pipe.text_encoder.config.hidden_size
    rect = RelationRectifier(RectifierConfig(text_width=width, hidden=16, adjuster="role"))
    t = Triplet("red circle", "above", "blue square")
    prompt = encode_prompt(tiny_pipe, "a red circle above a blue square")
    sentence = encode_prompt(tiny_pipe, "this is a photo of red circle")
    assert rect.adjust_vectors([rect.build_graph(tiny_pipe, t, prompt, sentence)]).abs().sum() == 0  # starts at base
    torch.manual_seed(0)
    torch.nn.init.normal_(rect.role.lins[-1].weight)

    def delta(a, b, text=None):
        enc = encode_prompt(tiny_pipe, text or f"a {a} above a {b}")
        return rect.adjust_vectors([rect.build_graph(tiny_pipe, Triplet(a, "above", b), enc, sentence)])[0]

    ab, ba = delta("red circle", "blue square"), delta("blue square", "red circle")
    assert ab[PROMPT_ADJUST].abs().sum() > 0
    assert torch.allclose(ab[PROMPT_ADJUST], -ba[PROMPT_ADJUST], atol=1e-5)
    assert not torch.allclose(ab[OBJECT_SENTENCE_ADJUST], ba[OBJECT_SENTENCE_ADJUST])
    # a pair never seen together gets what each object does in its role with other partners
    chain = delta("red circle", "green triangle")[PROMPT_ADJUST] + delta("green triangle", "blue square")[PROMPT_ADJUST]
    assert torch.allclose(ab[PROMPT_ADJUST], chain, atol=1e-5)
    # the EOT is not an input: the same triplet over another prompt's states gets the same adjustment
    assert torch.allclose(ab, delta("red circle", "blue square", "a blue square above a red circle"), atol=1e-6)
    # a prompt with two relations gets the sum of its relations' adjustments from one graph
    two = [Triplet("red circle", "above", "blue square"), Triplet("green triangle", "left of", "blue square")]
    enc = encode_prompt(tiny_pipe, "a red circle above a blue square and a green triangle left of the blue square")
    joint = rect.adjust_vectors([rect.build_prompt_graph(tiny_pipe, two, enc, sentence)])[0, PROMPT_ADJUST]
    parts = rect.adjust_vectors([rect.build_graph(tiny_pipe, x, enc, sentence) for x in two])[:, PROMPT_ADJUST]
    assert torch.allclose(joint, parts.sum(0), atol=1e-5)
