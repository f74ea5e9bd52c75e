import json

import numpy as np
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
