import json

import numpy as np
import pytest
import torch
from PIL import Image

from rrnet.generate import GenerationSettings, generate
from rrnet.rectifier import RectifierConfig, RelationRectifier

PROMPTS = ["a red block above a blue block", "a blue block above a red block"]


def _rect():
    torch.manual_seed(0)
    cfg = RectifierConfig(text_width=32, hidden=16, triplets=[{"object_a": "red block", "relation": "above", "object_b": "blue block"}])
    rect = RelationRectifier(cfg)
    for p in rect.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return rect


def _pixels(path):
    return np.asarray(Image.open(path))


def test_layout_grid_and_same_seed_same_images(tiny_pipe, tmp_path):
    settings = GenerationSettings(alphas=(0.0, 0.8), num_images=2, steps=3, seed=7)
    a = generate(tiny_pipe, PROMPTS, tmp_path / "a", _rect(), settings, progress=False)
    b = generate(tiny_pipe, PROMPTS, tmp_path / "b", _rect(), settings, progress=False)
    for prompt in PROMPTS:
        assert list(a.images[prompt]) == ["alpha_0", "alpha_0.8"]
        for label, paths in a.images[prompt].items():
            assert [p.name for p in paths] == ["000.png", "001.png"]
            for pa, pb in zip(paths, b.images[prompt][label]):
                assert np.array_equal(_pixels(pa), _pixels(pb))
    assert (tmp_path / "a" / "0_a_red_block_above_a_blue_block" / "alpha_0.8" / "001.png").is_file()
    grid = Image.open(a.grid)
    assert grid.width > grid.height  # 2 rows, 2 columns + label column
    record = json.loads((tmp_path / "a" / "generation.json").read_text())
    assert record["prompts"] == PROMPTS and record["settings"]["seed"] == 7


def test_alpha_zero_is_the_base_model_and_alpha_changes_images(tiny_pipe, tmp_path):
    settings = GenerationSettings(alphas=(0.0, 0.8), num_images=1, steps=3)
    rect = generate(tiny_pipe, PROMPTS[:1], tmp_path / "r", _rect(), settings, progress=False)
    base = generate(tiny_pipe, PROMPTS[:1], tmp_path / "b", None, settings, progress=False)
    r, b = rect.images[PROMPTS[0]], base.images[PROMPTS[0]]
    assert list(b) == ["base"]
    assert np.array_equal(_pixels(r["alpha_0"][0]), _pixels(b["base"][0]))
    assert not np.array_equal(_pixels(r["alpha_0.8"][0]), _pixels(b["base"][0]))


def test_negative_embeddings_stay_unmodified(tiny_pipe, monkeypatch, tmp_path):
    seen = []
    original = tiny_pipe.encode_prompt

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append((kwargs.get("prompt_embeds") is not None, out))
        return out

    monkeypatch.setattr(tiny_pipe, "encode_prompt", spy)
    settings = GenerationSettings(alphas=(0.8,), num_images=1, steps=2)
    generate(tiny_pipe, PROMPTS[:1], tmp_path, _rect(), settings, progress=False)
    in_pipeline = [out for given, out in seen if given]
    assert in_pipeline, "the pipeline encodes its own negative prompt"
    expected_uncond = original("", tiny_pipe.device, 1, False)[0]
    assert torch.equal(in_pipeline[-1][1], expected_uncond)


def test_sampling_defaults_come_from_the_model_record(tmp_path):
    """A mini-world folder's world.json says how its numbers were sampled; a flag left out takes
    that value everywhere (generate, evaluate, experiment, analyze), other models the paper's."""
    import argparse

    from rrnet.errors import RRNetError
    from rrnet.generate import PAPER_SAMPLING, fill_sampling_defaults

    world = tmp_path / "world"
    world.mkdir()
    (world / "world.json").write_text(json.dumps({"sampling": {"num_inference_steps": 12, "guidance_scale": 2.5}}))
    args = argparse.Namespace(model=str(world), steps=None, guidance_scale=None)
    fill_sampling_defaults(args)
    assert (args.steps, args.guidance_scale) == (12, 2.5)
    args = argparse.Namespace(model=str(world), steps=40, guidance_scale=None)
    fill_sampling_defaults(args)
    assert (args.steps, args.guidance_scale) == (40, 2.5)  # a flag given wins
    args = argparse.Namespace(model=str(tmp_path / "plain-sd"), steps=None, guidance_scale=None)
    fill_sampling_defaults(args)
    assert (args.steps, args.guidance_scale) == (PAPER_SAMPLING["num_inference_steps"], PAPER_SAMPLING["guidance_scale"])
    (world / "world.json").write_text(json.dumps({"sampling": {"steps": "many"}}))
    with pytest.raises(RRNetError, match="num_inference_steps"):
        fill_sampling_defaults(argparse.Namespace(model=str(world), steps=None, guidance_scale=None))


def test_every_sampling_command_leaves_steps_to_the_model(tmp_path):
    from rrnet.cli import build_parser

    parser = build_parser()
    commands = [["generate", "--model", "m", "--output_dir", "o"], ["evaluate", "--model", "m", "--benchmark", "b", "--output_dir", "o"],
                ["experiment", "--model", "m", "--benchmark", "b", "--output_dir", "o"],
                ["analyze", "alpha-sweep", "--model", "m", "--rectifier", "r", "--output_dir", "o"],
                ["analyze", "mask-eot", "--model", "m", "--prompt", "p", "--output_dir", "o"]]
    for argv in commands:
        args = parser.parse_args(argv)
        assert args.steps is None and args.guidance_scale is None, argv
