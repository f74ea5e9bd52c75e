"""Self-taught exemplars: the denoiser's own object regions label its samples' layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rrnet import self_teach
from rrnet.errors import DataError
from rrnet.self_teach import read_layouts, region_centroids, relation_layout, self_taught_folder
from rrnet.world.record import shipped_backbone

SHIPPED = shipped_backbone()
needs_shipped = pytest.mark.skipif(not (SHIPPED / "model_index.json").is_file(), reason="mini-world backbone not built")


def test_relation_layout_knows_positional_phrases_and_refuses_others():
    import rrnet

    assert rrnet.self_taught_folder is self_taught_folder
    assert relation_layout("above") == ("y", True)
    assert relation_layout("Beneath") == ("y", False)
    assert relation_layout("to the  left of") == ("x", True)
    assert relation_layout("right of") == ("x", False)
    with pytest.raises(DataError, match="'riding' is not positional"):
        relation_layout("riding")


def blobs(n: int, a_at: tuple[int, int], b_at: tuple[int, int], size: int = 8) -> torch.Tensor:
    """Contrast maps with a positive blob (A) and a negative blob (B) at (row, column)."""
    maps = torch.zeros(n, size, size)
    maps[:, a_at[0], a_at[1]] = 1.0
    maps[:, b_at[0], b_at[1]] = -2.0
    return maps


def test_region_centroids_are_in_image_pixels():
    ca, cb = region_centroids(blobs(1, (1, 6), (6, 2)), height=32, width=32)
    assert ca.tolist() == [[26.0, 6.0]] and cb.tolist() == [[10.0, 26.0]]  # (x, y), pixel centres of 4x4 cells
    ca, cb = region_centroids(blobs(1, (1, 6), (6, 2)), height=32, width=64)
    assert ca.tolist() == [[52.0, 6.0]] and cb.tolist() == [[20.0, 26.0]]  # a wide image: 8x4 cells


@pytest.mark.parametrize("relation, a_at, b_at, layout", [
    ("above", (1, 4), (6, 4), "ARB"), ("above", (6, 4), (1, 4), "BRA"), ("below", (6, 4), (1, 4), "ARB"),
    ("left of", (4, 1), (4, 6), "ARB"), ("right of", (4, 1), (4, 6), "BRA"),
    ("above", (4, 3), (4, 4), None),  # too close along the axis
    ("above", (3, 0), (4, 7), None),  # further apart across the axis than along it
])
def test_read_layouts_labels_by_the_relation_axis(monkeypatch, relation, a_at, b_at, layout):
    monkeypatch.setattr(self_teach, "object_contrast", lambda pipe, images, pa, pb, settings: blobs(len(images), a_at, b_at))
    images = np.zeros((2, 32, 32, 3), np.uint8)
    readings = read_layouts(None, images, "cat", relation, "dog")
    assert [r.layout for r in readings] == [layout, layout]


def test_object_contrast_is_seeded_and_antisymmetric_in_its_captions(tiny_pipe):
    """The same noise for both captions: swapping them negates the map exactly, and a rerun repeats it."""
    images = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    settings = self_teach.LocatorSettings(noise_levels=(0.3, 0.7), draws=2, batch=2)
    contrast = self_teach.object_contrast(tiny_pipe, images, "a photo of a cat", "a photo of a dog", settings)
    side = 32 // tiny_pipe.vae_scale_factor  # one value per latent pixel
    assert contrast.shape == (3, side, side) and torch.isfinite(contrast).all() and contrast.abs().sum() > 0
    swapped = self_teach.object_contrast(tiny_pipe, images, "a photo of a dog", "a photo of a cat", settings)
    assert torch.equal(swapped, -contrast)
    assert torch.equal(self_teach.object_contrast(tiny_pipe, images, "a photo of a cat", "a photo of a dog", settings),
                       contrast)


def fake_layouts(pattern: list[str | None]):
    """read_layouts stand-in that cycles through `pattern` over the samples it is given."""
    state = {"k": 0}

    def read(pipe, images, a, relation, b, margin, object_template, settings):
        out = []
        for _ in images:
            layout = pattern[state["k"] % len(pattern)]
            state["k"] += 1
            out.append(self_teach.LayoutReading((0.0, 0.0), (0.0, 0.0), layout))
        return out

    return read


def test_self_taught_folder_is_an_official_relation_folder(tiny_pipe, tmp_path, monkeypatch):
    from rrnet.data import load_relation

    tiny_pipe.set_progress_bar_config(disable=True)
    monkeypatch.setattr(self_teach, "read_layouts", fake_layouts(["ARB", None, "BRA", "ARB"]))
    folder = self_taught_folder(tiny_pipe, "red block", "above", "blue block", tmp_path / "st", n_images=2,
                                max_samples=16, batch=4, steps=2, guidance_scale=1.0)
    spec = load_relation(folder)
    assert (spec.object_a, spec.relation, spec.object_b) == ("red block", "above", "blue block")
    assert len(spec.images_prompt) == len(spec.images_swapped) == 2
    index = json.loads((folder / "index.json").read_text())
    assert index["ARB"] == "a red block above a blue block" and index["BRA"] == "a blue block above a red block"
    for sub in (index["ARB_dir"], index["BRA_dir"], "red block", "blue block"):
        assert sorted(p.name for p in (folder / sub).iterdir()) == ["1.png", "2.png"]
    record = json.loads((folder / "self_taught.json").read_text())
    # 4 samples of the prompt gave ARB, unclear, BRA, ARB: one BRA short, so 4 of the swap were drawn
    assert record["samples"] == 8 and record["kept"] == {"ARB": 4, "BRA": 2} and record["unclear"] == 2
    assert [r["prompt"] for r in record["readings"]] == [index["ARB"]] * 4 + [index["BRA"]] * 4
    assert [r["seed"] for r in record["readings"]] == list(range(8))


def test_self_taught_folder_says_which_layout_it_could_not_find(tiny_pipe, tmp_path, monkeypatch):
    tiny_pipe.set_progress_bar_config(disable=True)
    monkeypatch.setattr(self_teach, "read_layouts", fake_layouts(["ARB"]))
    with pytest.raises(DataError, match=r"only 0 'a blue block above a red block' images read clearly in 8 samples"):
        self_taught_folder(tiny_pipe, "red block", "above", "blue block", tmp_path / "st", n_images=2,
                           max_samples=8, batch=4, steps=2, guidance_scale=1.0)
    assert not (tmp_path / "st").exists()
    with pytest.raises(DataError, match="two different objects"):
        self_taught_folder(tiny_pipe, "cat", "above", "Cat", tmp_path / "st")


def test_positional_triplets_read_the_prompt():
    from rrnet.self_teach import positional_triplets, relation_folder_name

    assert positional_triplets("there is a panda below desk") == [("panda", "below", "desk")]
    assert positional_triplets("A red cup is placed on the wooden table") == [("red cup", "is placed on", "wooden table")]
    assert positional_triplets("a cat on the left of a dog") == [("cat", "on the left of", "dog")]
    assert positional_triplets("a man riding a horse") == []
    assert relation_folder_name("red cup", "on the left of", "dog") == "red_cup_on_the_left_of_dog"


def test_teach_command_refuses_bad_input_in_one_line(tiny_model_dir, tmp_path, capsys):
    from rrnet.cli import main

    base = ["teach", "--model", str(tiny_model_dir), "--output_dir", str(tmp_path / "t")]
    assert main([*base, "--triplet", "cat", "riding", "dog"]) == 2
    assert "'riding' is not positional" in capsys.readouterr().err
    assert main(base) == 2
    assert "give --triplet A R B or --prompt" in capsys.readouterr().err
    assert main([*base, "--prompt", "a man riding a horse"]) == 2
    assert "states no positional relation" in capsys.readouterr().err
    assert main([*base, "--triplet", "cat", "above", "dog", "--object_template", "a {thing}"]) == 2
    assert "--object_template 'a {thing}' may name only {obj}" in capsys.readouterr().err
    assert main([*base, "--triplet", "cat", "above", "dog", "--num_images", "5", "--max_samples", "8"]) == 2
    assert "below 2 x --num_images" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_teach_command_writes_folders_train_reads(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from rrnet.cli import main

    monkeypatch.setattr(self_teach, "read_layouts", fake_layouts(["ARB", "BRA"]))
    out = tmp_path / "t"
    assert main(["teach", "--model", str(tiny_model_dir), "--output_dir", str(out), "--triplet", "cat", "left of", "dog",
                 "--prompt", "there is a cat left of dog", "a red cup above a bowl", "--num_images", "1",
                 "--max_samples", "4", "--steps", "2", "--no_progress"]) == 0
    assert "2 self-taught relation folder(s)" in capsys.readouterr().out  # the repeated relation is taught once
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["cat_left_of_dog", "red_cup_above_bowl"]
    assert main(["train", "--model", str(tiny_model_dir), "--data", str(out), "--output_dir", str(tmp_path / "r"),
                 "--epochs", "1", "--no_progress"]) == 0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert sorted(map(tuple, config["prompts"])) == [("a cat left of a dog", "a dog left of a cat"),
                                                     ("a red cup above a bowl", "a bowl above a red cup")]


def test_teach_command_with_a_collapse_gate_skips_what_the_encoder_orders(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from rrnet.cli import main

    monkeypatch.setattr(self_teach, "read_layouts", fake_layouts(["ARB", "BRA"]))
    out = tmp_path / "t"
    assert main(["teach", "--model", str(tiny_model_dir), "--output_dir", str(out), "--triplet", "cat", "left of", "dog",
                 "--collapse_gate", "1.01", "--num_images", "1", "--max_samples", "4", "--steps", "2", "--no_progress"]) == 0
    assert "skipped cat / left of / dog: the text encoder orders it (EOT cosine" in capsys.readouterr().out
    assert not (out / "cat_left_of_dog").exists()


@needs_shipped
def test_readings_agree_with_the_exact_judge_on_a_held_out_pair(world_pipe):
    """The labels a self-taught folder trains on: on a collapsed pair no rectifier was trained on,
    the denoiser's own object regions give the layout the exact judge finds in (almost) every image."""
    from benchmarks.common import sampled_images
    from rrnet.world.judge import judge_image
    from rrnet.world.record import world_sampling
    from rrnet.world.vocab import prompt_for

    torch.set_num_threads(1)
    sampling = world_sampling(SHIPPED)
    a, relation, b = "purple cross", "left of", "pink wedge"  # held-out, horizontal
    images = sampled_images(world_pipe, prompt_for(a, relation, b), None, None, None, 24, 0,
                            sampling["num_inference_steps"], sampling["guidance_scale"])
    readings = read_layouts(world_pipe, images, a, relation, b)
    verdicts = [judge_image(im, a, relation, b).verdict for im in images]
    pairs = [(r.layout, v) for r, v in zip(readings, verdicts) if r.layout and v in ("ARB", "BRA")]
    assert len(pairs) >= 18 and {v for _, v in pairs} == {"ARB", "BRA"}  # both layouts drawn and read
    assert sum(r == v for r, v in pairs) >= len(pairs) - 1, pairs


def base_and_rectified(pipe, rect, relations, steps: int, guidance: float) -> tuple[list[float], list[float]]:
    """Relation accuracy of both object orders of each relation (24 seeded images each), with the
    base model and with `rect` at alpha 0.8 reading the triplet from the prompt."""
    from rrnet.world.evaluate import score_prompt

    kwargs = dict(n=24, seed=0, steps=steps, guidance=guidance)
    base, fixed = [], []
    for a, relation, b in relations:
        for x, y in ((a, b), (b, a)):
            base.append(score_prompt(pipe, x, relation, y, **kwargs)[0].relation_accuracy)
            fixed.append(score_prompt(pipe, x, relation, y, alpha=0.8, rectifier=rect, **kwargs)[0].relation_accuracy)
    return base, fixed


@needs_shipped
def test_a_self_taught_rectifier_fixes_a_held_out_pair(world_pipe, tmp_path):
    """The claim end to end, small and seeded: with no rendered image of a held-out collapsed pair,
    the model's own labelled samples train a rectifier that raises both directions over base."""
    from rrnet.data import load_relation
    from rrnet.train import TrainConfig, train_rectifier
    from rrnet.world.record import world_sampling

    torch.set_num_threads(1)
    sampling = world_sampling(SHIPPED)
    steps, guidance = sampling["num_inference_steps"], sampling["guidance_scale"]
    a, relation, b = "blue square", "above", "green triangle"  # held-out: no rectifier ever trains on it
    folder = self_taught_folder(world_pipe, a, relation, b, tmp_path / "st", steps=steps, guidance_scale=guidance)
    rect, _ = train_rectifier(world_pipe, load_relation(folder), TrainConfig(seed=0), progress=False)
    base, fixed = base_and_rectified(world_pipe, rect, [(a, relation, b)], steps, guidance)
    assert all(f >= x + 0.2 for f, x in zip(fixed, base)) and sum(fixed) / 2 >= 0.75, (base, fixed)


@needs_shipped
def test_one_triplet_rectifier_taught_on_two_held_out_pairs_fixes_both(world_pipe, tmp_path):
    """One rectifier for several pairs with no rendered image: the model's own labelled samples of
    two held-out collapsed pairs (one per axis) train one triplet-MLP rectifier that reads the
    triplet from each prompt and raises all four prompts over base."""
    from rrnet.data import load_relations
    from rrnet.train import TrainConfig, train_rectifier
    from rrnet.world.record import world_sampling

    torch.set_num_threads(1)
    sampling = world_sampling(SHIPPED)
    steps, guidance = sampling["num_inference_steps"], sampling["guidance_scale"]
    relations = [("blue square", "above", "green triangle"), ("purple cross", "left of", "pink wedge")]
    folders = [self_taught_folder(world_pipe, *words, tmp_path / "_".join(words), steps=steps, guidance_scale=guidance)
               for words in relations]
    config = TrainConfig(seed=0, epochs=50, learning_rate=1e-3, adjuster="triplet")
    rect, _ = train_rectifier(world_pipe, load_relations(folders), config, progress=False)
    base, fixed = base_and_rectified(world_pipe, rect, relations, steps, guidance)
    assert all(f >= x + 0.2 for f, x in zip(fixed, base)) and sum(fixed) / 4 >= 0.75, (base, fixed)
