import json

import pytest
import torch
import torch.nn.functional as F

from rrnet.data import load_relation
from rrnet.rectifier import encode_prompt
from rrnet.train import (PAIR_STEPS, TrainConfig, freeze, new_rectifier, pair_step_loss, prepare_relation,
                         rectified_eot_cosine, train_rectifier)

SMALL = dict(hidden=16, heads=2)


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_frozen_models_bit_identical_and_log_written(tiny_pipe, relation_dir, tmp_path):
    before = {name: _state(getattr(tiny_pipe, name)) for name in ("text_encoder", "unet", "vae")}
    spec = load_relation(relation_dir)
    rect, history = train_rectifier(tiny_pipe, spec, TrainConfig(epochs=2, **SMALL), tmp_path / "out", progress=False)
    for name, state in before.items():
        after = getattr(tiny_pipe, name).state_dict()
        assert all(torch.equal(state[k], after[k]) for k in state), name
    lines = [json.loads(l) for l in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2] and len(history) == 2
    assert set(lines[0]["steps"]) == {"/".join(p) for p in PAIR_STEPS}
    # the logged cosines are the ones the saved rectifier gives: base (alpha 0) and rectified (alpha 1)
    prompt, swapped = (encode_prompt(tiny_pipe, p).eot for p in (spec.prompt, spec.swapped_prompt))
    assert lines[-1]["eot_cosine_base"] == pytest.approx(F.cosine_similarity(prompt, swapped, dim=0).item(), abs=1e-5)
    prepared = prepare_relation(tiny_pipe, rect, spec, TrainConfig(epochs=2, **SMALL))
    assert lines[-1]["eot_cosine"] == pytest.approx(rectified_eot_cosine(rect, prepared), abs=1e-5)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["triplets"] == [{"object_a": "red block", "relation": "above", "object_b": "blue block"}]
    assert saved["training"]["epochs"] == 2


def _objective(pipe, rect, prepared, cfg) -> float:
    """The training loss on fixed draws (same noise, timesteps and exemplars before and after)."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    chosen = {k: 0 for k in prepared.sides}
    with torch.no_grad():
        return sum(pair_step_loss(pipe, rect, prepared, pair, chosen, cfg, sched, torch.Generator().manual_seed(s)).loss.item()
                   for pair in PAIR_STEPS for s in range(6))


def test_training_lowers_its_objective(tiny_pipe, relation_dir):
    """Training must lower the relation-compelling loss on fixed draws; weight decay alone would not."""
    spec = load_relation(relation_dir)
    cfg = TrainConfig(epochs=10, learning_rate=1e-2, **SMALL)
    freeze(tiny_pipe)
    untrained = new_rectifier(tiny_pipe, cfg)
    before = _objective(tiny_pipe, untrained, prepare_relation(tiny_pipe, untrained, spec, cfg), cfg)
    rect, _ = train_rectifier(tiny_pipe, spec, cfg, progress=False)
    after = _objective(tiny_pipe, rect, prepare_relation(tiny_pipe, rect, spec, cfg), cfg)
    assert after < before - 0.01 * abs(before), (before, after)


def test_only_the_rectifier_receives_gradients(tiny_pipe, relation_dir):
    from diffusers import DDPMScheduler

    cfg = TrainConfig(epochs=1, **SMALL)
    freeze(tiny_pipe)
    rect = new_rectifier(tiny_pipe, cfg)
    prepared = prepare_relation(tiny_pipe, rect, load_relation(relation_dir), cfg)
    chosen = {k: 0 for k in prepared.sides}
    sched = DDPMScheduler.from_config(tiny_pipe.scheduler.config)
    loss = pair_step_loss(tiny_pipe, rect, prepared, ("prompt", "object_a"), chosen, cfg, sched, torch.Generator().manual_seed(0))
    loss.loss.backward()
    # the last layer is read out at adjust nodes only: its convs into adjust nodes must all learn
    readout = {n: p for n, p in rect.named_parameters() if n.startswith("hgcn.layers.1.") and "adjust" in n.split(".")[4]}
    assert readout and all(p.grad is not None for p in readout.values())
    assert all(p.grad.abs().sum() > 0 for n, p in readout.items() if n.endswith(("lin.weight", "bias")))
    assert all(p.grad is not None for n, p in rect.named_parameters() if n.startswith("hgcn.layers.0."))
    for name in ("text_encoder", "unet", "vae"):
        assert all(p.grad is None and not p.requires_grad for p in getattr(tiny_pipe, name).parameters())


def test_ablation_switches(tiny_pipe, relation_dir):
    spec = load_relation(relation_dir)
    _, hist = train_rectifier(tiny_pipe, spec, TrainConfig(epochs=1, negative=False, disentangle=False, **SMALL), progress=False)
    assert list(hist[0]["steps"]) == ["prompt/swapped"]
    assert hist[0]["steps"]["prompt/swapped"]["negative"] is None


def test_same_seed_same_training(tiny_pipe, relation_dir):
    spec = load_relation(relation_dir)
    runs = [train_rectifier(tiny_pipe, spec, TrainConfig(epochs=2, **SMALL), progress=False)[0] for _ in range(2)]
    a, b = (r.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_no_hgcn_ablation_learns_free_vectors_only(tiny_pipe, relation_dir, tmp_path):
    import pytest

    from rrnet.errors import PromptError
    from rrnet.rectifier import RelationRectifier

    spec = load_relation(relation_dir)
    rect, _ = train_rectifier(tiny_pipe, spec, TrainConfig(epochs=2, learning_rate=1e-2, adjuster="free", **SMALL),
                              tmp_path / "free", progress=False)
    names = [n for n, _ in rect.named_parameters()]
    assert names == ["free"] and not any("hgcn" in k for k in rect.state_dict())
    assert rect.free.abs().sum() > 0  # started at zero, learned
    loaded = RelationRectifier.from_pretrained(tmp_path / "free")
    assert loaded.config.adjuster == "free" and torch.equal(loaded.free, rect.free)
    out = loaded.prompt_embeds(tiny_pipe, [spec.prompt, spec.swapped_prompt], alpha=1.0)
    base = loaded.prompt_embeds(tiny_pipe, [spec.prompt, spec.swapped_prompt], alpha=0.0)
    from rrnet.rectifier import encode_prompt

    for row, prompt, direction in ((0, spec.prompt, 0), (1, spec.swapped_prompt, 1)):
        eot = encode_prompt(tiny_pipe, prompt).tokens.eot_index
        assert torch.allclose(out[row, eot] - base[row, eot], rect.free[direction, 0], atol=1e-5)
    with pytest.raises(PromptError, match="only knows the two prompts"):
        loaded.prompt_embeds(tiny_pipe, "a blue block above a green block", alpha=1.0,
                             triplet=("blue block", "above", "green block"))


def test_edit_after_eot_ablation_edits_the_padding(tiny_pipe, relation_dir):
    from rrnet.rectifier import add_at_eot, encode_prompt

    spec = load_relation(relation_dir)
    rect, _ = train_rectifier(tiny_pipe, spec, TrainConfig(epochs=1, edit_positions="after_eot", **SMALL), progress=False)
    assert rect.config.edit_positions == "after_eot"
    eot = encode_prompt(tiny_pipe, spec.prompt).tokens.eot_index
    diff = (rect.prompt_embeds(tiny_pipe, spec.prompt, 1.0) - rect.prompt_embeds(tiny_pipe, spec.prompt, 0.0))[0]
    changed = diff.abs().sum(-1) > 0
    assert not changed[:eot].any() and changed[eot:].all()
    # the default edits the EOT only
    embeds, delta = torch.zeros(2, 6, 3), torch.ones(2, 3)
    one = add_at_eot(embeds, torch.tensor([2, 4]), delta)
    assert (one.abs().sum(-1) > 0).tolist() == [[False, False, True, False, False, False], [False] * 4 + [True, False]]
    many = add_at_eot(embeds, torch.tensor([2, 4]), delta, positions="after_eot")
    assert (many.abs().sum(-1) > 0).tolist() == [[False, False, True, True, True, True], [False] * 4 + [True, True]]
