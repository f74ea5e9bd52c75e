"""The mini world's backbone: its tokenizer, a resumable build, and the shipped trained model."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rrnet.training_state import load_state, save_state
from rrnet.world.build import build_world_backbone, stage_done
from rrnet.world.record import shipped_backbone
from rrnet.world.recipe import WorldRecipe
from rrnet.world.tokenizer import world_tokenizer, world_words

from kill_switch import child_env

SHIPPED = shipped_backbone()


def test_world_words_are_single_tokens_and_padding_is_sd2_style():
    tok = world_tokenizer()
    for word in world_words():
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    ids = tok("a red circle above a blue square", padding="max_length", max_length=77).input_ids
    assert ids[:9] == [tok.bos_token_id, *ids[1:8], tok.eos_token_id] and ids[9] == tok.pad_token_id == tok.convert_tokens_to_ids("!")


def test_training_state_round_trip(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    rng = np.random.default_rng(5)
    save_state(tmp_path / "s", {"m": model}, opt, 7, rng, {"k": 1})
    expected_draw, expected_torch = rng.random(), torch.rand(1)
    other = torch.nn.Linear(3, 2)
    opt2 = torch.optim.AdamW(other.parameters(), lr=0.1)
    rng2 = np.random.default_rng(0)
    meta = load_state(tmp_path / "s", {"m": other}, opt2, rng2)
    assert meta["step"] == 7 and meta["extra"] == {"k": 1}
    assert torch.equal(other.weight, model.weight)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert rng2.random() == expected_draw and torch.equal(torch.rand(1), expected_torch)


SMALL = dict(tune_steps=0, text_steps=2, text_scene_batch=4, text_full_length_every=1, vae_steps=2, unet_steps=2, checkpoint_every=1,
             vae_batch=4, unet_batch=4, unet_channels=(16, 32, 32))


def test_build_is_resumable_and_loads_with_plain_diffusers(tmp_path):
    from diffusers import StableDiffusionPipeline

    small = SMALL
    out = build_world_backbone(tmp_path / "mini", WorldRecipe(**small), progress=False)
    work = tmp_path / "mini.build"
    assert json.loads((work / "unet_state.json").read_text())["step"] == 2
    vae_mtime = (work / "vae" / "config.json").stat().st_mtime_ns
    build_world_backbone(tmp_path / "mini", WorldRecipe(**{**small, "unet_steps": 3}), progress=False)
    assert json.loads((work / "unet_state.json").read_text())["step"] == 3  # continued, not restarted
    assert (work / "vae" / "config.json").stat().st_mtime_ns == vae_mtime  # finished stage kept
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
    pipe = StableDiffusionPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle above a blue square", num_inference_steps=2, guidance_scale=4.0,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32)
    info = json.loads((out / "world.json").read_text())
    assert info["recipe"]["train_pairs"][0] == ["red circle", "blue square", "y"]
    assert info["sampling"] == {"num_inference_steps": 25, "guidance_scale": 3.0, "sampler": WorldRecipe().sampler}


def test_a_stage_killed_while_writing_is_trained_again(tmp_path):
    """diffusers and transformers write config.json before the weights: a kill in between must not
    leave a folder that the next run takes as a finished stage."""
    from transformers import CLIPTextModel

    work = tmp_path / "mini.build"
    half = work / "text_encoder"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")  # killed after the config, before the weights
    assert not stage_done(half)
    build_world_backbone(tmp_path / "mini", WorldRecipe(**SMALL), progress=False)
    assert stage_done(half) and (half / "model.safetensors").is_file()
    CLIPTextModel.from_pretrained(half)  # the stage was trained and written whole


def test_world_build_refuses_to_default_to_the_shipped_model(capsys):
    from rrnet.cli import main

    before = sorted(p.name for p in SHIPPED.iterdir()) if SHIPPED.is_dir() else None
    assert main(["world", "build", "--no_progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--output_dir is required" in err[0] and "shipped model" in err[0]
    assert (sorted(p.name for p in SHIPPED.iterdir()) if SHIPPED.is_dir() else None) == before


def test_changing_the_recipe_refuses_to_resume(tmp_path):
    from rrnet.errors import RRNetError

    small = {**SMALL, "text_steps": 1, "vae_steps": 1, "unet_steps": 1}
    build_world_backbone(tmp_path / "mini", WorldRecipe(**small), progress=False)
    with pytest.raises(RRNetError, match="another recipe"):
        build_world_backbone(tmp_path / "mini", WorldRecipe(**{**small, "text_width": 32}), progress=False)


needs_shipped = pytest.mark.skipif(not (SHIPPED / "model_index.json").is_file(), reason="mini-world backbone not built")


@needs_shipped
def test_shipped_backbone_draws_objects_and_follows_direction():
    from rrnet.backbones.loading import load_pipeline
    from rrnet.world.evaluate import score_prompt
    from rrnet.world.record import world_sampling

    pipe = load_pipeline(str(SHIPPED), device="cpu", progress=False)
    sampling = world_sampling(SHIPPED)
    for a, relation, b in (("red circle", "above", "purple cross"), ("white bar", "right of", "blue square")):  # control pairs
        score, _ = score_prompt(pipe, a, relation, b, n=16, seed=0, steps=sampling["num_inference_steps"],
                                guidance=sampling["guidance_scale"])
        assert score.object_accuracy >= 0.8
        assert score.relation_accuracy >= 0.8  # an order-aware pair: the denoiser follows the direction


@needs_shipped
def test_shipped_text_encoder_collapses_exactly_the_collapsed_pairs():
    """Computed from the shipped weights: every collapsed pair's two directions share an EOT state
    (alone and inside two-relation captions); order-aware pairs are told apart."""
    from transformers import CLIPTextModel

    from rrnet.world.corpus import Corpus
    from rrnet.world.record import load_recipe
    from rrnet.world.text_model import swapped_cosines

    recipe = load_recipe(SHIPPED)
    encoder = CLIPTextModel.from_pretrained(SHIPPED / "text_encoder").eval()
    tokenizer = world_tokenizer()
    corpus = Corpus.build(recipe)
    pairs = swapped_cosines(encoder, tokenizer, corpus.pairs)
    collapsed = [c for it, _, c in pairs if it.collapsed[0]]
    aware = [c for it, _, c in pairs if not it.collapsed[0]]
    assert len(collapsed) == 4 * len(recipe.collapsed_pairs)  # two phrases, two orders each
    assert min(collapsed) >= 0.999
    assert float(np.mean(aware)) < 0.8 and max(aware) < 0.9
    rng = np.random.default_rng(0)
    scenes = [corpus.scenes[i] for i in rng.choice(len(corpus.scenes), 400, replace=False)]
    rows = swapped_cosines(encoder, tokenizer, scenes)
    assert min(c for it, k, c in rows if it.collapsed[k]) >= 0.99
    assert float(np.mean([c for it, k, c in rows if not it.collapsed[k]])) < 0.8


@needs_shipped
def test_demo_quick_completes(tmp_path, capsys):
    from rrnet.cli import main

    code = main(["demo", "--quick", "--output_dir", str(tmp_path / "demo"), "--no_progress", "--alpha", "0.8"])
    assert code == 0
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [r["setting"] for r in results["rows"]] == ["base", "alpha_0.8"] * 2
    assert (tmp_path / "demo" / "grid.png").is_file() and (tmp_path / "demo" / "report.md").is_file()


def test_judge_arrays_scores_rendered_scenes():
    from rrnet.world.evaluate import judge_arrays
    from rrnet.world.render import render_object, render_scene

    rng = np.random.default_rng(0)
    right = np.stack([render_scene("red circle", "above", "blue square", rng)[0] for _ in range(6)])
    swapped = np.stack([render_scene("blue square", "above", "red circle", rng)[0] for _ in range(2)])
    single = np.stack([render_object("red circle", rng)[0] for _ in range(2)])
    scores = judge_arrays(np.concatenate([right, swapped, single]), "red circle", "above", "blue square")
    assert scores == {"relation_accuracy": 0.6, "swapped_rate": 0.2, "object_accuracy": 0.8}


GUARD_EPOCHS = 100


@needs_shipped
def test_training_a_rectifier_fixes_a_collapsed_pair(tmp_path):
    """The headline claim, small and seeded: the demo's recipe on a collapsed train pair separates
    the two prompts' EOT states and raises relation accuracy in both directions over the base model."""
    from rrnet.backbones.loading import load_pipeline
    from rrnet.data import load_relation
    from rrnet.demo import DEMO_RECIPE
    from rrnet.recipes import recipe_config
    from rrnet.train import train_rectifier
    from rrnet.world.evaluate import score_prompt
    from rrnet.world.exemplars import write_relation_folder
    from rrnet.world.record import world_sampling

    torch.set_num_threads(1)
    pipe = load_pipeline(str(SHIPPED), device="cpu", progress=False)
    a, relation, b = "red circle", "above", "blue square"  # a collapsed train pair
    data = write_relation_folder(tmp_path / "data", a, relation, b, n_images=5, size=32, seed=0)
    rect, history = train_rectifier(pipe, load_relation(data), recipe_config(DEMO_RECIPE, epochs=GUARD_EPOCHS, seed=0),
                                    progress=False)
    assert history[-1]["eot_cosine_base"] > 0.999
    assert history[-1]["eot_cosine"] < history[-1]["eot_cosine_base"] - 0.05
    sampling = world_sampling(SHIPPED)
    kwargs = dict(n=24, seed=0, steps=sampling["num_inference_steps"], guidance=sampling["guidance_scale"])
    base, fixed = [], []
    for x, y in ((a, b), (b, a)):
        base.append(score_prompt(pipe, x, relation, y, **kwargs)[0].relation_accuracy)
        fixed.append(score_prompt(pipe, x, relation, y, alpha=1.0, rectifier=rect, **kwargs)[0].relation_accuracy)
    # both directions gain (a rectifier that pushes both prompts to one layout loses one of them), and
    # together they reach what the README's demo shows; one direction's exact rate moves by a few
    # images between CPUs, whose float sums in training differ
    assert all(f >= x + 0.2 for f, x in zip(fixed, base)) and sum(fixed) / 2 >= 0.75, (base, fixed)


# ---------------------------------------------------------------------------------------------
# `world build` killed (SIGKILL) at several points: nothing is read as finished, a rerun ends with
# the same model as a build that was never killed. The EOT cosine summary written into world.json
# (30 s over the whole corpus) is replaced by one caption in every run here; it is not part of what is trained.
# ---------------------------------------------------------------------------------------------

KILL_BUILD = """
import os, re, signal, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[4])
import rrnet.world.build as build
from rrnet.world.recipe import WorldRecipe
from test_world_backbone import SMALL, cheap_cosines
when, pattern, out = sys.argv[1], re.compile(sys.argv[2]), Path(sys.argv[3])
build.eot_cosines = lambda encoder, tokenizer, *args, **kwargs: cheap_cosines(encoder, tokenizer)
original = os.replace
def replace(src, dst, *args, **kwargs):
    hit = pattern.search(Path(dst).name) is not None
    if hit and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    original(src, dst, *args, **kwargs)
    if hit and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
build.build_world_backbone(out, WorldRecipe(**SMALL), progress=False)
"""


def cheap_cosines(encoder, tokenizer) -> dict:
    """Stands in for `eot_cosines`: one caption through the encoder, tokenised as the real one does."""
    from rrnet.world.text_model import eot_states

    return {"stub": float(eot_states(encoder, tokenizer, ["a red circle above a blue square"]).sum())}


def _build_stubbed(out):
    import rrnet.world.build as build

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(build, "eot_cosines", lambda encoder, tokenizer, *args, **kwargs: cheap_cosines(encoder, tokenizer))
        return build_world_backbone(out, WorldRecipe(**SMALL), progress=False)


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference_world(tmp_path_factory):
    return _build_stubbed(tmp_path_factory.mktemp("ref") / "mini")


@pytest.mark.parametrize(("when", "pattern"), [
    ("before", r"^stage\.json$"),             # the text encoder saved in its temporary folder, marker not yet
    ("after", r"^vae_state\.safetensors$"),   # mid autoencoder training, right after a checkpoint
    ("before", r"^\.mini\.complete$"),        # the whole model saved in a temporary folder, not renamed yet
], ids=["text-stage-marker", "vae-checkpoint", "final-swap"])
def test_killed_world_build_leaves_nothing_finished_and_resumes(reference_world, tmp_path, when, pattern):
    out = tmp_path / "mini"
    tests = str(Path(__file__).resolve().parent)
    killed = subprocess.run([sys.executable, "-c", KILL_BUILD, when, pattern, str(out), tests], env=child_env(),
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not out.exists()  # no model folder a later run (or diffusers) could load as finished
    work = tmp_path / "mini.build"
    for stage in ("text_encoder", "vae"):
        folder = work / stage
        assert not folder.exists() or stage_done(folder)  # a stage folder exists only when complete
    before = torch.get_rng_state()
    assert _build_stubbed(out) == out
    assert torch.equal(torch.get_rng_state(), before)  # the caller's global stream is left alone
    assert _files(out) == _files(reference_world)  # bit for bit the model of an uninterrupted build
    leftovers = [p.name for folder in (tmp_path, work) for p in folder.iterdir() if p.name.startswith(".")]
    assert not leftovers  # the killed build's temporaries (a whole model's copy, say) are gone
