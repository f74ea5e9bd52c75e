"""One rectifier trained on several relations: config, batching, resuming, refusals."""

import json

import pytest
import torch

from rrnet.data import load_relation, load_relations
from rrnet.errors import RRNetError
from rrnet.resume import Checkpointing
from rrnet.train import TrainConfig, train_rectifier
from rrnet.world.exemplars import write_relation_folder

SMALL = dict(hidden=16, heads=2)


@pytest.fixture()
def two_relations(tmp_path):
    bench = tmp_path / "bench"
    write_relation_folder(bench, "red circle", "above", "blue square", n_images=2, size=32, seed=0, name="vertical")
    write_relation_folder(bench, "green triangle", "left of", "yellow diamond", n_images=2, size=32, seed=1,
                          name="horizontal")
    return bench


def _weights(rect):
    return {k: v.detach().clone() for k, v in rect.state_dict().items()}


def test_one_relation_in_a_list_trains_exactly_as_alone(tiny_pipe, relation_dir):
    spec = load_relation(relation_dir)
    alone, _ = train_rectifier(tiny_pipe, spec, TrainConfig(epochs=2, **SMALL), progress=False)
    listed, _ = train_rectifier(tiny_pipe, [spec], TrainConfig(epochs=2, **SMALL), progress=False)
    a, b = _weights(alone), _weights(listed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_several_relations_train_one_rectifier_that_knows_them_all(tiny_pipe, two_relations, tmp_path):
    specs = load_relations([two_relations])  # a benchmark folder of relation folders
    assert [s.relation for s in specs] == ["left of", "above"]  # natural order of the folder names
    rect, history = train_rectifier(tiny_pipe, specs, TrainConfig(epochs=2, relations_per_step=1, **SMALL),
                                    tmp_path / "out", progress=False)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert {(t["object_a"], t["relation"], t["object_b"]) for t in config["triplets"]} == {
        ("red circle", "above", "blue square"), ("green triangle", "left of", "yellow diamond")}
    assert config["relation_phrases"] == {"above": "above", "left of": "left of"}
    assert set(history[-1]["eot_cosines"]) == {"red circle above blue square", "green triangle left of yellow diamond"}
    # relations_per_step=1: two groups per epoch, each running the five pair steps
    assert len(history) == 2 and all(len(e["steps"]) == 5 for e in history)
    # the triplet comes from the prompt, for either relation and either order
    found = rect.find_triplet("a yellow diamond left of a green triangle")
    assert (found.object_a, found.relation, found.object_b) == ("yellow diamond", "left of", "green triangle")
    found = rect.find_triplet("there is a blue square above the red circle")
    assert (found.object_a, found.relation, found.object_b) == ("blue square", "above", "red circle")


def test_several_relations_resume_to_the_same_weights(tiny_pipe, two_relations, tmp_path):
    specs = load_relations(two_relations)
    cfg = TrainConfig(epochs=2, relations_per_step=1, seed=3, **SMALL)
    whole, _ = train_rectifier(tiny_pipe, specs, cfg, tmp_path / "whole", progress=False)
    train_rectifier(tiny_pipe, specs, cfg, tmp_path / "parts", progress=False, checkpointing=Checkpointing(every=7))
    resumed, _ = train_rectifier(tiny_pipe, specs, cfg, tmp_path / "parts", progress=False,
                                 checkpointing=Checkpointing(resume_from=tmp_path / "parts" / "checkpoint-7"))
    a, b = _weights(whole), _weights(resumed)  # step 7 is inside the first epoch's second group
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_refusals(tiny_pipe, two_relations, relation_dir):
    specs = load_relations(two_relations)
    with pytest.raises(RRNetError, match="--no_hgcn trains one relation only"):
        train_rectifier(tiny_pipe, specs, TrainConfig(epochs=1, adjuster="free", **SMALL), progress=False)
    with pytest.raises(RRNetError, match="given twice"):
        train_rectifier(tiny_pipe, [specs[0], specs[0]], TrainConfig(epochs=1, **SMALL), progress=False)
    with pytest.raises(RRNetError, match="relations_per_step"):
        TrainConfig(relations_per_step=0).check()


def test_cli_trains_several_data_folders(tiny_model_dir, two_relations, tmp_path, capsys):
    from rrnet.cli import main

    out = tmp_path / "rect"
    code = main(["train", "--model", str(tiny_model_dir), "--data", str(two_relations / "vertical"),
                 str(two_relations / "horizontal"), "--epochs", "1", "--hidden_size", "16", "--heads", "2",
                 "--output_dir", str(out), "--no_progress"])
    assert code == 0 and "trained 2 relations" in capsys.readouterr().out
    assert len(json.loads((out / "config.json").read_text())["triplets"]) == 2
    code = main(["train", "--model", str(tiny_model_dir), "--data", str(two_relations), "--no_hgcn",
                 "--output_dir", str(tmp_path / "free"), "--no_progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--no_hgcn trains one relation only" in err


def test_antisymmetric_generalist_trains_and_round_trips(tiny_pipe, two_relations, tmp_path):
    from rrnet.rectifier_files import load_rectifier

    specs = load_relations(two_relations)
    rect, _ = train_rectifier(tiny_pipe, specs, TrainConfig(epochs=1, antisymmetric=True, **SMALL), tmp_path / "out",
                              progress=False)
    loaded = load_rectifier(tmp_path / "out")
    assert loaded.config.antisymmetric
    a = loaded.prompt_embeds(tiny_pipe, ["a red circle above a blue square", "a blue square above a red circle"])
    b = rect.prompt_embeds(tiny_pipe, ["a red circle above a blue square", "a blue square above a red circle"])
    assert torch.equal(a, b)
    with pytest.raises(RRNetError, match="antisymmetric needs the graph network"):
        train_rectifier(tiny_pipe, specs[:1], TrainConfig(epochs=1, antisymmetric=True, adjuster="free", **SMALL),
                        progress=False)


def test_direction_targets_teach_the_direction_part(tiny_pipe, two_relations, tmp_path):
    """Text-only pairs: the rectifier's adjustment over the mean EOT moves toward half the EOT difference."""
    from rrnet.direction_targets import direction_loss, prepare_direction_targets, read_prompt_pairs

    specs = load_relations(two_relations)
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text("# order-aware pairs\na purple cross above a cyan column | a cyan column above a purple cross\n"
                          "a white bar left of a pink wedge|a pink wedge left of a white bar\n")
    pairs = read_prompt_pairs(pairs_file)
    cfg = TrainConfig(epochs=5, learning_rate=1e-2, direction_weight=100.0, antisymmetric=True, **SMALL)
    untrained, _ = train_rectifier(tiny_pipe, specs, TrainConfig(epochs=0, antisymmetric=True, **SMALL), progress=False)
    rect, history = train_rectifier(tiny_pipe, specs, cfg, tmp_path / "out", progress=False, direction_pairs=pairs)
    targets = prepare_direction_targets(tiny_pipe, rect, pairs)
    assert targets.targets.shape[0] == 4 and torch.allclose(targets.targets[0], -targets.targets[1])
    with torch.no_grad():
        before, after = direction_loss(untrained, targets).item(), direction_loss(rect, targets).item()
    assert after < 0.5 * before, (before, after)
    assert all("direction" in step for step in history[-1]["steps"].values())


def test_direction_pairs_are_checked_before_the_model_loads(tiny_model_dir, two_relations, tmp_path, capsys):
    from rrnet.cli import main

    bad = tmp_path / "bad.txt"
    for text, message in (("a red circle above a blue square\n", "expected 'prompt | swapped prompt'"),
                          ("a red circle near a blue square | a blue square near a red circle\n", "must state one relation"),
                          ("a red circle above a blue square | a red circle above a green triangle\n", "not the first")):
        bad.write_text(text)
        code = main(["train", "--model", str(tiny_model_dir), "--data", str(two_relations), "--direction_pairs", str(bad),
                     "--output_dir", str(tmp_path / "out"), "--no_progress"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err


SCENE = (("red circle", "above", "blue square"), ("green triangle", "left of", "blue square"))


def test_scene_folders_train_one_joint_rectifier(tiny_pipe, two_relations, tmp_path):
    from rrnet.data import load_relation
    from rrnet.data.scenes import SceneSpec
    from rrnet.errors import DataError
    from rrnet.world.exemplars import write_scene_folder

    folder = write_scene_folder(two_relations, SCENE, n_images=2, size=32, seed=2)
    items = load_relations(two_relations)
    scene, = [s for s in items if isinstance(s, SceneSpec)]
    assert scene.relations == SCENE and len(scene.swapped_prompts) == 2
    with pytest.raises(DataError, match="states 2 relations"):
        load_relation(folder)
    rect, history = train_rectifier(tiny_pipe, items, TrainConfig(epochs=1, relations_per_step=2, **SMALL),
                                    tmp_path / "out", progress=False)
    assert rect.config.joint_relations and ["green triangle", "left of", "blue square"] in [
        [t["object_a"], t["relation"], t["object_b"]] for t in json.loads((tmp_path / "out" / "config.json").read_text())["triplets"]]
    assert scene.prompt in history[-1]["eot_cosines"]
    # the caption's two relations are found and edited through one joint graph
    found = rect.find_triplets(scene.prompt)
    assert [(t.object_a, t.relation, t.object_b) for t in found] == list(SCENE)
    assert len(rect.prompt_graphs(tiny_pipe, found, encode(tiny_pipe, scene.prompt))) == 1


def encode(pipe, prompt):
    from rrnet.rectifier import encode_prompt

    return encode_prompt(pipe, prompt)


def test_a_one_relation_rectifier_sums_the_adjustments_of_each_relation(tiny_pipe, two_relations):
    """The paper's Appendix E.2 baseline: one adjustment per relation, summed at the EOT."""
    from rrnet.graph import PROMPT_ADJUST
    from rrnet.rectifier import Triplet, add_at_eot
    from rrnet.train import new_rectifier

    rect = new_rectifier(tiny_pipe, TrainConfig(**SMALL), load_relations(two_relations))
    with torch.no_grad():
        for p in rect.parameters():
            p.add_(0.3 * torch.randn_like(p))
    caption = "a red circle above a blue square and a green triangle left of the blue square"
    enc = encode(tiny_pipe, caption)
    deltas = [rect.adjust_vectors([rect.build_graph(tiny_pipe, Triplet(*t), enc,
                                                    encode(tiny_pipe, f"this is a photo of {t[0]}"))])[0, PROMPT_ADJUST]
              for t in SCENE]
    expected = add_at_eot(enc.hidden[None], torch.tensor([enc.tokens.eot_index]), (deltas[0] + deltas[1])[None], 0.7)
    assert not rect.config.joint_relations
    assert torch.allclose(rect.prompt_embeds(tiny_pipe, caption, alpha=0.7), expected, atol=1e-6)


def test_recipe_options_change_only_what_they_say(tiny_pipe, relation_dir, tmp_path):
    from rrnet.train import learning_rate_schedule

    spec = load_relation(relation_dir)
    plain, _ = train_rectifier(tiny_pipe, spec, TrainConfig(epochs=1, **SMALL), progress=False)
    several, history = train_rectifier(tiny_pipe, spec, TrainConfig(epochs=1, timesteps_per_step=3, **SMALL), progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(_weights(plain).values(), _weights(several).values()))
    assert len(history) == 1
    cfg = TrainConfig(epochs=2, learning_rate=1e-2, lr_schedule="cosine", warmup_steps=2, **SMALL)
    schedule = learning_rate_schedule(torch.optim.AdamW([torch.zeros(1, requires_grad=True)]), cfg, 10)
    rates = [schedule(step)[0] for step in range(10)]
    assert rates[0] == 0.0 < rates[1] < rates[2] == pytest.approx(1e-2) and rates[-1] < 1e-3
    assert learning_rate_schedule(None, TrainConfig(), 10) is None  # the paper's constant rate: untouched
    # a scheduled run resumes to the same weights
    whole, _ = train_rectifier(tiny_pipe, spec, cfg, tmp_path / "whole", progress=False)
    train_rectifier(tiny_pipe, spec, cfg, tmp_path / "parts", progress=False, checkpointing=Checkpointing(every=3))
    resumed, _ = train_rectifier(tiny_pipe, spec, cfg, tmp_path / "parts", progress=False,
                                 checkpointing=Checkpointing(resume_from=tmp_path / "parts" / "checkpoint-3"))
    assert all(torch.equal(a, b) for a, b in zip(_weights(whole).values(), _weights(resumed).values()))
    with pytest.raises(RRNetError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear").check()


def test_timestep_floor_is_checked_and_changes_the_weights(tiny_pipe, relation_dir):
    """`timestep_min` outside [0, 1) is one clear error; inside, it draws other timesteps and so
    trains other weights than the paper's whole range (same seed)."""
    from rrnet.data import load_relation

    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(RRNetError, match="timestep_min"):
            TrainConfig(timestep_min=bad).check()
    spec = load_relation(relation_dir)
    whole, _ = train_rectifier(tiny_pipe, spec, TrainConfig(epochs=1, **SMALL), progress=False)
    late, _ = train_rectifier(tiny_pipe, spec, TrainConfig(epochs=1, timestep_min=0.7, **SMALL), progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(_weights(whole).values(), _weights(late).values()))


@pytest.mark.parametrize("adjuster", ["role", "triplet"])
def test_mlp_generalist_trains_moves_off_base_and_round_trips(tiny_pipe, two_relations, tmp_path, adjuster):
    from rrnet.rectifier_files import load_rectifier

    specs = load_relations(two_relations)
    prompts = ["a red circle above a blue square", "a blue square above a red circle"]
    rect, _ = train_rectifier(tiny_pipe, specs, TrainConfig(epochs=2, learning_rate=1e-2, adjuster=adjuster, **SMALL),
                              tmp_path / "out", progress=False)
    loaded = load_rectifier(tmp_path / "out")
    assert loaded.config.adjuster == adjuster and len(loaded.config.triplets) == 2
    edited, base = loaded.prompt_embeds(tiny_pipe, prompts, alpha=1.0), loaded.prompt_embeds(tiny_pipe, prompts, alpha=0.0)
    assert torch.equal(edited, rect.prompt_embeds(tiny_pipe, prompts, alpha=1.0))
    assert not torch.equal(edited, base)  # training moved it off the base model it starts at
    with pytest.raises(RRNetError, match="antisymmetric needs the graph network"):
        train_rectifier(tiny_pipe, specs, TrainConfig(epochs=1, antisymmetric=True, adjuster=adjuster, **SMALL),
                        progress=False)
