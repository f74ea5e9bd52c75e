"""The denoiser's tuning phase (more scenes of collapsed pairs, resumable, startable from a built model)
and the sampler a world model carries."""

import json

import numpy as np
import pytest

from rrnet.errors import RRNetError
from rrnet.world.build import build_world_backbone
from rrnet.world.corpus import Corpus, sample_item
from rrnet.world.recipe import WorldRecipe

from test_world_backbone import SMALL, _files, cheap_cosines


def _build(out, from_model=None, **changes):
    import rrnet.world.build as build

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(build, "eot_cosines", lambda encoder, tokenizer, *args, **kwargs: cheap_cosines(encoder, tokenizer))
        return build_world_backbone(out, WorldRecipe(**{**SMALL, **changes}), progress=False, from_model=from_model)


def _unet_weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


@pytest.fixture(scope="module")
def untuned(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("untuned") / "mini", tune_steps=0)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("tuned") / "mini", tune_steps=2)


def test_tuning_trains_the_denoiser_further_and_nothing_else(untuned, tuned):
    before, after = _files(untuned), _files(tuned)
    changed = sorted(k for k in before if before[k] != after.get(k))
    assert "unet/diffusion_pytorch_model.safetensors" in changed and "world.json" in changed
    assert all(k.startswith("unet/") or k == "world.json" for k in changed), changed
    assert json.loads((tuned / "world.json").read_text())["recipe"]["tune_steps"] == 2


def test_tuning_from_a_built_model_equals_a_build_from_scratch(untuned, tuned, tmp_path):
    out = _build(tmp_path / "mini", from_model=untuned, tune_steps=2)
    assert _files(out) == _files(tuned)  # the taken stages are the ones a full build trains


def test_tuning_is_resumable_with_more_steps(tuned, tmp_path):
    out = _build(tmp_path / "mini", tune_steps=1)
    work = tmp_path / "mini.build"
    assert json.loads((work / "unet_tune_state.json").read_text())["step"] == 1
    first_phase = (work / "unet" / "stage.json").stat().st_mtime_ns
    _build(out, tune_steps=2)
    assert json.loads((work / "unet_tune_state.json").read_text())["step"] == 2  # continued, not restarted
    assert (work / "unet" / "stage.json").stat().st_mtime_ns == first_phase  # the first phase is not retrained
    assert set(_unet_weights(out)) == set(_unet_weights(tuned))


def test_a_model_from_another_recipe_is_refused(untuned, tmp_path):
    with pytest.raises(RRNetError, match="another recipe .*text_width"):
        _build(tmp_path / "mini", from_model=untuned, tune_steps=1, text_width=32)
    with pytest.raises(RRNetError, match="not a mini-world model"):
        _build(tmp_path / "other", from_model=tmp_path, tune_steps=1)


def test_a_first_phase_taken_from_a_model_cannot_be_trained_on(untuned, tmp_path):
    _build(tmp_path / "mini", from_model=untuned, tune_steps=1)
    with pytest.raises(RRNetError, match="first phase .*came from another model"):
        _build(tmp_path / "mini", tune_steps=1, unet_steps=3)


def test_a_recipe_written_before_tuning_existed_reads_as_untuned():
    data = WorldRecipe().to_dict()
    for key in ("tune_steps", "tune_lr", "tune_collapsed_rate"):
        del data[key]
    assert WorldRecipe.from_dict(data).tune_steps == 0


def test_collapsed_rate_draws_that_share_of_collapsed_scenes():
    recipe = WorldRecipe()
    corpus = Corpus.build(recipe)
    n = 4000

    def shares(rate):
        rng = np.random.default_rng(0)
        items = [sample_item(recipe, rng, corpus, rate) for _ in range(n)]
        scenes = [it for it in items if len(it.triplets) == 2]
        return (sum(any(it.collapsed) for it in scenes) / n, sum(all(it.collapsed) for it in scenes) / n)

    plain_any, plain_both = shares(0.0)
    tuned_any, tuned_both = shares(0.5)
    # plain mix: scenes are 35 % of draws and few of them state a collapsed relation; tuned: half of all draws do
    assert plain_both < 0.03 and plain_any < 0.2
    assert 0.5 < tuned_any < 0.6 and 0.25 < tuned_both < 0.3


def test_cli_refuses_a_missing_from_model(tmp_path, capsys):
    from rrnet.cli import main

    assert main(["world", "build", "--output_dir", str(tmp_path / "m"), "--from_model", str(tmp_path / "missing"),
                 "--tune_steps", "1", "--no_progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--from_model" in err[0] and "no such model folder" in err[0]
    assert not (tmp_path / "m").exists()


def test_an_ancestral_sampler_is_carried_by_the_model_and_reproducible(untuned, tmp_path):
    import numpy as np
    from diffusers import StableDiffusionPipeline

    from rrnet.generate import GenerationSettings, prompt_embeddings, sample_images

    out = _build(tmp_path / "mini", from_model=untuned, tune_steps=0, sampler="ddim")
    assert _files(out)["unet/diffusion_pytorch_model.safetensors"] == _files(untuned)["unet/diffusion_pytorch_model.safetensors"]
    pipe = StableDiffusionPipeline.from_pretrained(untuned)  # the recipe's default sampler
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.scheduler).__name__ == "DDPMScheduler"
    assert json.loads((untuned / "world.json").read_text())["sampling"]["sampler"] == "ddpm"
    embeds = prompt_embeddings(pipe, "a red circle above a blue square", None, None)
    settings = GenerationSettings(num_images=3, seed=4, steps=3, guidance_scale=3.0)
    one_by_one = sample_images(pipe, embeds, settings, output_type="np", batch_size=1)
    together = sample_images(pipe, embeds, settings, output_type="np", batch_size=3)
    np.testing.assert_array_equal(together, sample_images(pipe, embeds, settings, output_type="np", batch_size=3))
    # image k depends on seed + k only, the noise of every step included (batching moves float sums alone)
    np.testing.assert_allclose(one_by_one, together, atol=1e-3)
    ddim = StableDiffusionPipeline.from_pretrained(out)
    ddim.set_progress_bar_config(disable=True)
    assert type(ddim.scheduler).__name__ == "DDIMScheduler"
    assert not np.array_equal(sample_images(ddim, embeds, settings, output_type="np"), together)


def test_an_unknown_sampler_or_a_rate_outside_0_1_is_refused():
    with pytest.raises(RRNetError, match="sampler"):
        WorldRecipe(sampler="euler")
    with pytest.raises(RRNetError, match="tune_collapsed_rate"):
        WorldRecipe(tune_collapsed_rate=1.5)
