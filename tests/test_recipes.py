"""Named recipes and the time-to-quality summary."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from benchmarks.common import rate
from benchmarks.time_to_quality import best_alpha, summarise
from rrnet.errors import RRNetError
from rrnet.recipes import RECIPES, recipe_config
from rrnet.train import TrainConfig


def test_official_recipe_is_the_dataclass_default():
    assert asdict(recipe_config("official")) == asdict(TrainConfig())
    assert recipe_config("official", seed=3).seed == 3


def test_every_recipe_is_a_valid_config_and_short_ones_take_a_fifth_of_the_steps():
    for name in RECIPES:
        recipe_config(name).check()
    assert recipe_config("fast").epochs * 5 <= TrainConfig().epochs


def test_each_recipe_option_changes_only_what_it_names():
    """A recipe differs from the paper's config in exactly the values it lists (and its name)."""
    official = asdict(TrainConfig())
    for name, values in RECIPES.items():
        changed = {k for k, v in asdict(recipe_config(name)).items() if official[k] != v}
        assert changed == set(values) | ({"recipe"} if name != "official" else set())


def test_unknown_recipe_is_one_clear_error():
    with pytest.raises(RRNetError, match="unknown recipe 'quick'"):
        recipe_config("quick")


def _row(recipe, seed, steps, successes, final, n=100, seconds=None):
    return {"recipe": recipe, "triplet": "a above b", "seed": seed, "steps": steps, "final": final,
            "seconds": steps * 0.1 if seconds is None else seconds, "relation": rate(successes, n),
            "objects": rate(n, n)}


def test_summary_finds_the_first_checkpoint_at_the_official_final_accuracy():
    rows = [_row("official", 0, 500, 90, True), _row("official", 1, 500, 94, True),  # target 0.92
            _row("fast", 0, 20, 50, False), _row("fast", 0, 40, 93, False), _row("fast", 0, 100, 95, True),
            _row("fast", 1, 20, 60, False), _row("fast", 1, 40, 80, False), _row("fast", 1, 100, 91, True)]
    s = summarise(rows, ["official", "fast"])
    assert s["official_final"] == {"a above b": pytest.approx(0.92)}
    fast = s["recipes"]["fast"]
    assert fast["steps_to_official"] == {"mean": 40, "worst": 40}  # seed 1 never gets there
    assert fast["never_reached"] == ["a above b seed 1"]
    assert fast["per_relation"]["a above b"]["final"]["successes"] == 186
    official = s["recipes"]["official"]
    assert official["never_reached"] == ["a above b seed 0"]  # 0.90 < its pooled 0.92


def test_recipe_official_trains_the_library_defaults_bit_for_bit(tiny_model_dir, tiny_pipe, relation_dir, tmp_path):
    """`rrnet train --recipe official` gives the weights that `train_rectifier` gives with
    `TrainConfig()` (the paper's values, same seed); `rrnet train` with no recipe is `--recipe fast`,
    and config.json records which recipe and values made the weights."""
    import json

    import torch
    from safetensors.torch import load_file

    from rrnet.cli import main
    from rrnet.data import load_relation
    from rrnet.recipes import DEFAULT_RECIPE
    from rrnet.train import train_rectifier

    torch.set_num_threads(1)
    assert DEFAULT_RECIPE == "fast"
    common = ["--model", str(tiny_model_dir), "--data", str(relation_dir), "--epochs", "2", "--hidden_size", "16",
              "--no_progress"]
    for name, extra in (("plain", []), ("official", ["--recipe", "official"]), ("fast", ["--recipe", "fast"])):
        assert main(["train", *common, "--output_dir", str(tmp_path / name), *extra]) == 0
    library, _ = train_rectifier(tiny_pipe, load_relation(relation_dir), TrainConfig(epochs=2, hidden=16), progress=False)
    weights = {name: load_file(str(tmp_path / name / "rectifier.safetensors")) for name in ("plain", "official", "fast")}
    for key, value in library.state_dict().items():
        assert torch.equal(weights["official"][key], value)
        assert torch.equal(weights["plain"][key], weights["fast"][key])
    assert any(not torch.equal(weights["fast"][k], weights["official"][k]) for k in weights["fast"])
    for name in ("plain", "fast"):
        trained = json.loads((tmp_path / name / "config.json").read_text())["training"]
        assert trained["recipe"] == "fast" and trained["timestep_min"] == 0.7 and trained["epochs"] == 2
    assert json.loads((tmp_path / "official" / "config.json").read_text())["training"]["recipe"] == "official"


def test_best_alpha_is_the_most_accurate_and_ties_go_to_the_weaker_edit():
    judged = {"0.6": {"relation": rate(40, 100)}, "1": {"relation": rate(70, 100)}, "1.4": {"relation": rate(70, 100)}}
    assert best_alpha(judged) == "1"
    assert best_alpha({"1.4": {"relation": rate(5, 10)}, "0.6": {"relation": rate(5, 10)}}) == "0.6"


def test_time_to_quality_quick_runs_end_to_end_and_merges(tmp_path):
    """The benchmark trains, checkpoints and judges on the shipped mini world in seconds; two
    result files of the same settings merge into one whose summary covers both."""
    import json

    import torch

    from benchmarks import time_to_quality

    torch.set_num_threads(1)
    out = tmp_path / "ttq.json"
    time_to_quality.main(["--quick", "--recipes", "official", "fast", "--alphas", "0.8", "--threads", "1",
                          "--work", str(tmp_path / "work"), "--output", str(out)])
    result = json.loads(out.read_text())
    official = [r for r in result["rows"] if r["recipe"] == "official"]
    assert [r["steps"] for r in official] == [5, 10] and [r["final"] for r in official] == [False, True]
    assert [r["steps"] for r in result["rows"] if r["recipe"] == "fast"] == [5]
    final = official[-1]
    assert final["alpha"] == 0.8 and set(final["alphas"]) == {"0.8"} and final["relation"]["n"] == 8
    assert set(result["summary"]["recipes"]) == {"official", "fast"}
    assert out.with_suffix(".png").is_file()
    time_to_quality.main(["--quick", "--timing", "--recipes", "fast", "--alphas", "0.8", "--threads", "1",
                          "--work", str(tmp_path / "work"), "--output", str(out)])
    timing = json.loads(out.read_text())["timing"]["fast"]
    assert timing["steps"] == 5 and len(timing["seconds"]) == 1

    other = json.loads(out.read_text())
    for row in other["rows"]:
        row["seed"] = 1
    (tmp_path / "seed1.json").write_text(json.dumps(other))
    merged = tmp_path / "merged.json"
    time_to_quality.main(["--merge", str(out), str(tmp_path / "seed1.json"), "--output", str(merged)])
    rows = json.loads(merged.read_text())["rows"]
    assert len(rows) == 2 * len(result["rows"]) and {r["seed"] for r in rows} == {0, 1}
