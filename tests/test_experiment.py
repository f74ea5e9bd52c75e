"""`rrnet experiment` on a one-relation, two-image mini-world benchmark: completes, reports, resumes."""

from __future__ import annotations

import json

import pytest

from rrnet.cli import main
from rrnet.errors import RRNetError
from rrnet.eval.judges.exact import ExactJudge
from rrnet.eval.runner import EvalSettings
from rrnet.experiment import VARIANTS, ExperimentConfig, run_experiment
from rrnet.train import TrainConfig
from rrnet.world.benchmark import write_world_benchmark
from rrnet.world.record import shipped_backbone


TRAIN = [("red circle", "above", "blue square")]  # a collapsed train pair of the shipped world
UNSEEN = [("blue square", "above", "green triangle")]  # a held-out collapsed pair


def _config() -> ExperimentConfig:
    return ExperimentConfig(
        train=TrainConfig(epochs=1, hidden=16, heads=1), baseline_epochs=1, alphas=(0.5, 1.0), ablation_alpha=1.0,
        evaluation=EvalSettings(num_images=1, steps=2, guidance_scale=4.0, batch_size=2),
    )


def test_experiment_completes_and_resumes(tmp_path):
    from rrnet.backbones.loading import load_pipeline

    bench = write_world_benchmark(tmp_path / "bench", TRAIN, n_images=2)
    unseen = write_world_benchmark(tmp_path / "unseen", UNSEEN, n_images=2)
    loads = []

    def load_pipe():
        loads.append(1)
        pipe = load_pipeline(str(shipped_backbone()), device="cpu", progress=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    out = tmp_path / "out"
    first = run_experiment(load_pipe, "mini", bench, out, [ExactJudge()], _config(), unseen=unseen, progress=False)
    assert sorted(first["trained"]["trained"]) == sorted(f"{v}/red_circle_above_blue_square" for v in VARIANTS)
    methods = {row["method"] for row in first["results"]["rows"]}
    assert methods == {"dataset", "base", *VARIANTS}
    report = (out / "report.md").read_text()
    for heading in ("Table 1", "Table 2", "Table 5", "OSP EOT cosine", "Unseen objects"):
        assert heading in report
    for name in ("w/o HGCN", "w/o negative loss", "w/o node disentanglement", "Textual Inversion", "UNet update (LoRA)",
                 "Personalized Diffusion", "RR Dataset"):
        assert name in report
    osp = json.loads((out / "osp.json").read_text())
    assert osp[0]["eot_cosine_base"] > 0.99  # a collapsed pair of the mini world
    assert set(osp[0]["eot_cosine_rectified"]) == {"0.5", "1"}
    assert [r["name"] for r in first["unseen"]["relations"]] == ["blue_square_above_green_triangle"]

    images = {p: p.stat().st_mtime_ns for p in (out / "evaluation" / "images").rglob("*.png")}
    weights = {p: p.stat().st_mtime_ns for p in (out / "checkpoints").rglob("*.safetensors")}
    second = run_experiment(load_pipe, "mini", bench, out, [ExactJudge()], _config(), unseen=unseen, progress=False)
    assert second["trained"]["trained"] == [] and len(second["trained"]["skipped"]) == len(VARIANTS)
    assert second["results"]["generation"]["images_generated_this_run"] == 0
    assert {p: p.stat().st_mtime_ns for p in images} == images
    assert {p: p.stat().st_mtime_ns for p in weights} == weights
    assert [r["judged"] for r in second["results"]["rows"]] == [r["judged"] for r in first["results"]["rows"]]


def test_experiment_config_is_checked(tmp_path):
    with pytest.raises(RRNetError, match="unknown experiment variant"):
        ExperimentConfig(variants=("rrnet", "magic"))
    with pytest.raises(RRNetError, match="keep 'rrnet'"):
        ExperimentConfig(variants=("no_hgcn",))
    bench = write_world_benchmark(tmp_path / "bench", TRAIN, n_images=2)
    args = ["experiment", "--model", str(shipped_backbone()), "--benchmark", str(bench), "--output_dir", str(tmp_path / "o"),
            "--no_progress"]
    assert main([*args, "--epochs", "0"]) == 2
    assert main([*args, "--judge", "detector"]) == 2  # needs --judge_model


def test_world_benchmark_command(tmp_path):
    from rrnet.data import find_relations
    from rrnet.world.recipe import WorldRecipe

    recipe = WorldRecipe()
    args = ["world", "benchmark", "--output_dir", str(tmp_path / "b"), "--unseen_dir", str(tmp_path / "u"),
            "--relations", "above", "left of", "--reference_dir", str(tmp_path / "r"), "--reference_images", "3",
            "--num_images", "2"]
    assert main(args) == 0
    specs = find_relations(tmp_path / "b")
    expected = [(a, "above" if axis == "y" else "left of", b) for a, b, axis in recipe.train_pairs]
    assert sorted((s.object_a, s.relation, s.object_b) for s in specs) == sorted(expected)
    assert all(s.category == "position" and len(s.images_prompt) == 2 for s in specs)
    unseen = {(s.object_a, s.object_b) for s in find_relations(tmp_path / "u")}
    assert unseen == {(a, b) for a, b, _ in recipe.heldout_pairs + recipe.control_pairs}
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert main([*args[:-2], "--num_images", "0"]) == 2
    assert main(["world", "benchmark", "--output_dir", str(tmp_path / "c"), "--pair", "red circle", "white bar", "y",
                 "--relations", "above", "below", "left of", "--num_images", "1"]) == 0
    assert sorted(s.relation for s in find_relations(tmp_path / "c")) == ["above", "below"]  # only its axis
    assert main(["world", "benchmark", "--output_dir", str(tmp_path / "d"), "--pair", "red circle", "white bar", "z"]) == 2
    assert main(["world", "benchmark", "--output_dir", str(tmp_path / "d"), "--splits", "nonsense"]) == 2


def test_world_exemplars_command_writes_one_or_two_relations(tmp_path, capsys):
    from PIL import Image

    from rrnet.data import load_relation
    from rrnet.world.judge import judge_image, judge_relations

    one = tmp_path / "one"
    assert main(["world", "exemplars", "--relation", "green triangle", "below", "yellow diamond",
                 "--output_dir", str(one), "--num_images", "3", "--seed", "1"]) == 0
    spec = load_relation(one)
    assert (spec.object_a, spec.relation, spec.object_b) == ("green triangle", "below", "yellow diamond")
    assert len(spec.images_prompt) == 3
    assert all(judge_image(Image.open(p), "green triangle", "below", "yellow diamond").verdict == "ARB" for p in spec.images_prompt)
    two = tmp_path / "two"
    relations = [("red circle", "above", "blue square"), ("green triangle", "left of", "blue square")]
    assert main(["world", "exemplars", *[x for r in relations for x in ("--relation", *r)], "--output_dir", str(two),
                 "--num_images", "2"]) == 0
    index = json.loads((two / "index.json").read_text())
    assert index["relations"] == [list(r) for r in relations]
    assert index["prompt"] == "a red circle above a blue square and a green triangle left of the blue square"
    for png in (two / index["prompt_dir"]).iterdir():
        assert judge_relations(Image.open(png), relations).all_correct
    for k, sub in enumerate(index["swapped_dirs"]):
        for png in (two / sub).iterdir():
            outcomes = judge_relations(Image.open(png), relations).outcomes
            assert outcomes[k] == "swapped" and outcomes[1 - k] == "correct"
    assert sorted(index["objects"]) == ["blue square", "green triangle", "red circle"]
    capsys.readouterr()
    bad = main(["world", "exemplars", "--relation", "red circle", "above", "blue square", "--relation", "green triangle",
                "below", "blue square", "--output_dir", str(tmp_path / "bad")])
    assert bad == 2 and "different axes" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
