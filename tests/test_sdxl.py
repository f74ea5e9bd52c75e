"""SDXL: a rectifier edits the EOT of both encoders' states and the pooled embedding, in training and
at inference; alpha 0 is the pipeline itself, bit for bit; train, generate and evaluate run on a
tiny random `StableDiffusionXLPipeline` built from configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rrnet.backbones.sdxl import SDXLConditioning, is_sdxl, pooled_from_penultimate
from rrnet.backbones.tiny import build_tiny_sdxl_pipeline
from rrnet.cli import main
from rrnet.data import load_relation
from rrnet.errors import CheckpointError, RRNetError
from rrnet.generate import GenerationSettings, prompt_embeddings, sample_images
from rrnet.rectifier import RectifierConfig, RelationRectifier
from rrnet.train import TrainConfig, new_rectifier, pair_step_loss, setup_training, train_rectifier

WIDTH_1, WIDTH_2, POOLED = 32, 48, 40  # the tiny pipeline's encoder widths and projection
PROMPT = "a red block above a blue block"
SMALL = dict(hidden=16, heads=2, seed=3)


@pytest.fixture(scope="module")
def sdxl_pipe():
    pipe = build_tiny_sdxl_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sdxl_model_dir(tmp_path_factory) -> Path:
    from rrnet.backbones.tiny import build_tiny_backbone

    return build_tiny_backbone(tmp_path_factory.mktemp("models") / "tiny-sdxl", seed=0, sdxl=True)


def visible_rectifier(pipe, spec) -> RelationRectifier:
    """An untrained rectifier whose adjustment is clearly non-zero."""
    rect = new_rectifier(pipe, TrainConfig(**SMALL), spec)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        for p in rect.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return rect.eval()


def pipeline_conditioning(pipe, prompt: str) -> SDXLConditioning:
    embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompt, device="cpu", do_classifier_free_guidance=False)
    return SDXLConditioning(embeds, pooled)


def eot_of(pipe, prompt: str) -> int:
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=77).input_ids
    return ids.index(pipe.tokenizer.eos_token_id)


def test_tiny_pipeline_is_sdxl_shaped(sdxl_pipe):
    from transformers import CLIPTextModelWithProjection

    assert is_sdxl(sdxl_pipe) and isinstance(sdxl_pipe.text_encoder_2, CLIPTextModelWithProjection)
    assert sdxl_pipe.unet.config.addition_embed_type == "text_time"
    ids_1 = sdxl_pipe.tokenizer(PROMPT, padding="max_length", max_length=77).input_ids
    ids_2 = sdxl_pipe.tokenizer_2(PROMPT, padding="max_length", max_length=77).input_ids
    eot = ids_1.index(sdxl_pipe.tokenizer.eos_token_id)
    assert ids_1[eot + 1] == sdxl_pipe.tokenizer.eos_token_id and ids_2[eot + 1] != ids_2[eot]  # EOT vs "!" padding
    assert ids_2.index(sdxl_pipe.tokenizer_2.eos_token_id) == eot
    base = pipeline_conditioning(sdxl_pipe, PROMPT)
    assert base.prompt_embeds.shape == (1, 77, WIDTH_1 + WIDTH_2) and base.pooled_prompt_embeds.shape == (1, POOLED)
    with torch.no_grad():  # the encoder's own last layer, norm and projection over its penultimate states
        again = pooled_from_penultimate(sdxl_pipe.text_encoder_2, base.prompt_embeds[..., WIDTH_1:], torch.tensor([eot]))
    assert torch.allclose(again, base.pooled_prompt_embeds, atol=1e-6)


def test_both_eot_places_are_edited_and_nothing_else(sdxl_pipe, relation_dir):
    rect = visible_rectifier(sdxl_pipe, load_relation(relation_dir))
    other = "a photo of a cat"  # no relation the rectifier knows: passed through
    out = rect.prompt_embeds(sdxl_pipe, [PROMPT, other], alpha=0.7)
    assert isinstance(out, SDXLConditioning)
    prompt_embeds, pooled = out  # the README's unpacking
    base = pipeline_conditioning(sdxl_pipe, PROMPT)
    eot = eot_of(sdxl_pipe, PROMPT)
    changed = (prompt_embeds[0] != base.prompt_embeds[0]).any(-1).nonzero().flatten().tolist()
    assert changed == [eot]
    delta = prompt_embeds[0, eot] - base.prompt_embeds[0, eot]
    assert delta[:WIDTH_1].abs().max() > 1e-3 and delta[WIDTH_1:].abs().max() > 1e-3  # both encoders' parts
    assert (pooled[0] - base.pooled_prompt_embeds[0]).abs().max() > 1e-4
    # the pooled embedding is what text_encoder_2 itself outputs when its penultimate EOT state is the edited one
    layer = sdxl_pipe.text_encoder_2.text_model.encoder.layers[-1]

    def edit_input(module, args, kwargs):
        states = args[0].clone()
        states[:, eot] += delta[WIDTH_1:]
        return (states, *args[1:]), kwargs

    handle = layer.register_forward_pre_hook(edit_input, with_kwargs=True)
    try:
        expected = pipeline_conditioning(sdxl_pipe, PROMPT).pooled_prompt_embeds
    finally:
        handle.remove()
    assert torch.allclose(pooled[0], expected[0], atol=1e-5)
    plain = pipeline_conditioning(sdxl_pipe, other)
    assert torch.equal(prompt_embeds[1], plain.prompt_embeds[0]) and torch.equal(pooled[1], plain.pooled_prompt_embeds[0])


@pytest.mark.parametrize("force_zeros", [True, False])
def test_alpha_zero_is_the_pipeline_bit_for_bit(relation_dir, force_zeros):
    pipe = build_tiny_sdxl_pipeline(seed=1, force_zeros_for_empty_prompt=force_zeros)
    pipe.set_progress_bar_config(disable=True)
    rect = visible_rectifier(pipe, load_relation(relation_dir))
    out = rect.prompt_embeds(pipe, [PROMPT], alpha=0.0)
    base = pipeline_conditioning(pipe, PROMPT)
    assert torch.equal(out.prompt_embeds, base.prompt_embeds)
    assert torch.equal(out.pooled_prompt_embeds, base.pooled_prompt_embeds)
    settings = GenerationSettings(num_images=2, seed=4, steps=3, guidance_scale=5.0)
    ours = sample_images(pipe, out, settings, output_type="np")
    generators = [torch.Generator("cpu").manual_seed(4 + k) for k in range(2)]
    theirs = pipe(prompt=PROMPT, num_images_per_prompt=2, generator=generators, num_inference_steps=3,
                  guidance_scale=5.0, height=32, width=32, output_type="np").images
    assert np.array_equal(ours, theirs)
    assert not np.array_equal(sample_images(pipe, rect.prompt_embeds(pipe, PROMPT, alpha=1.0), settings, "np"), theirs)


def test_training_changes_only_the_rectifier(sdxl_pipe, relation_dir, tmp_path):
    modules = ("text_encoder", "text_encoder_2", "unet", "vae")
    before = {(m, k): v.clone() for m in modules for k, v in getattr(sdxl_pipe, m).state_dict().items()}
    start = new_rectifier(sdxl_pipe, TrainConfig(**SMALL), load_relation(relation_dir)).state_dict()
    rect, history = train_rectifier(sdxl_pipe, load_relation(relation_dir), TrainConfig(epochs=3, **SMALL),
                                    tmp_path / "rect", progress=False)
    assert len(history) == 3 and all(np.isfinite(h["loss"]) for h in history)
    assert all(torch.equal(v, getattr(sdxl_pipe, m).state_dict()[k]) for (m, k), v in before.items())
    assert all(p.grad is None for m in modules for p in getattr(sdxl_pipe, m).parameters())
    assert any(not torch.equal(start[k], v) for k, v in rect.state_dict().items())
    config = json.loads((tmp_path / "rect" / "config.json").read_text())
    assert (config["text_width"], config["text_widths"], config["pooled_width"]) == (WIDTH_1 + WIDTH_2, [WIDTH_1, WIDTH_2], POOLED)
    assert config["format_version"] == 2
    loaded = RelationRectifier.from_pretrained(tmp_path / "rect")
    a, b = rect.prompt_embeds(sdxl_pipe, PROMPT, alpha=0.5), loaded.prompt_embeds(sdxl_pipe, PROMPT, alpha=0.5)
    assert torch.equal(a.prompt_embeds, b.prompt_embeds) and torch.equal(a.pooled_prompt_embeds, b.pooled_prompt_embeds)


@pytest.mark.parametrize("draws", [1, 2])
def test_training_passes_the_edited_pooled_embedding_and_time_ids(sdxl_pipe, relation_dir, monkeypatch, draws):
    config = TrainConfig(**SMALL, timesteps_per_step=draws)
    rect, prepared, scheduler, _, generator = setup_training(sdxl_pipe, load_relation(relation_dir), config)
    with torch.no_grad():
        for p in rect.parameters():
            p.add_(0.3 * torch.randn_like(p))
    seen = []
    forward = sdxl_pipe.unet.forward

    def spy(*args, **kwargs):
        seen.append(kwargs["added_cond_kwargs"])
        return forward(*args, **kwargs)

    monkeypatch.setattr(sdxl_pipe.unet, "forward", spy)
    chosen = {"prompt": 0, "swapped": 1, "object_a": 0, "object_b": 1}
    result = pair_step_loss(sdxl_pipe, rect, prepared, ("prompt", "swapped"), chosen, config, scheduler, generator)
    (added,) = seen  # one batched call: own and other images, both sides, each draw
    assert torch.equal(added["time_ids"], torch.tensor([[32.0, 32, 0, 0, 32, 32]]).expand(4 * draws, -1))
    base = torch.stack([prepared.sides[n].encoded.pooled for n in ("prompt", "swapped")])
    assert added["text_embeds"].shape == (4 * draws, POOLED) and added["text_embeds"].requires_grad
    assert not torch.allclose(added["text_embeds"][:2], base, atol=1e-4)
    assert all(torch.equal(added["text_embeds"][2 * k:2 * k + 2], added["text_embeds"][:2]) for k in range(2 * draws))
    pooled_grad, = torch.autograd.grad(result.loss, added["text_embeds"], retain_graph=True)
    assert pooled_grad.abs().sum() > 0
    result.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in rect.parameters())


@pytest.mark.parametrize("switch", [dict(cache_latents=False), dict(cache_text=False), dict(batch_unet=False)])
def test_fast_path_switches_give_the_same_gradients(sdxl_pipe, relation_dir, switch):
    def grads(config):
        rect, prepared, scheduler, _, generator = setup_training(sdxl_pipe, load_relation(relation_dir), config)
        chosen = {"prompt": 1, "swapped": 0, "object_a": 1, "object_b": 0}
        loss = pair_step_loss(sdxl_pipe, rect, prepared, ("prompt", "object_a"), chosen, config, scheduler, generator).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in rect.named_parameters() if p.grad is not None}

    (loss_a, a), (loss_b, b) = grads(TrainConfig(**SMALL)), grads(TrainConfig(**SMALL, **switch))
    assert torch.allclose(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    assert a and a.keys() == b.keys() and all(torch.allclose(a[n], b[n], rtol=1e-4, atol=1e-7) for n in a)


def test_a_rectifier_for_the_other_backbone_is_one_clear_error(sdxl_pipe, tiny_pipe, relation_dir, tmp_path):
    spec = load_relation(relation_dir)
    for_sd, for_sdxl = new_rectifier(tiny_pipe, TrainConfig(**SMALL), spec), new_rectifier(sdxl_pipe, TrainConfig(**SMALL), spec)
    with pytest.raises(CheckpointError, match=r"a text encoder of width 32; this model has 2 text encoders of widths "
                                              r"32 \+ 48 and a pooled embedding of width 40 \(SDXL\)"):
        for_sd.prompt_embeds(sdxl_pipe, PROMPT)
    with pytest.raises(CheckpointError, match=r"trained for 2 text encoders .*; this model has a text encoder of width 32"):
        for_sdxl.prompt_embeds(tiny_pipe, PROMPT)
    assert "text_widths" not in json.loads((for_sd.save_pretrained(tmp_path / "sd") / "config.json").read_text())


def test_config_records_the_widths_and_a_damaged_one_is_refused(sdxl_pipe, relation_dir, tmp_path):
    from rrnet.rectifier_files import load_rectifier

    folder = new_rectifier(sdxl_pipe, TrainConfig(**SMALL), load_relation(relation_dir)).save_pretrained(tmp_path / "r")
    assert load_rectifier(folder).config.text_widths == [WIDTH_1, WIDTH_2]
    config = json.loads((folder / "config.json").read_text())
    for key, value, fragment in [("text_widths", [32, 40], "do not add up"), ("pooled_width", None, "come together"),
                                 ("text_widths", "wide", "text_widths must be")]:
        (folder / "config.json").write_text(json.dumps({**config, key: value}))
        with pytest.raises(CheckpointError, match=fragment):
            load_rectifier(folder)


def test_baselines_refuse_sdxl(sdxl_pipe, relation_dir):
    from rrnet.baselines.training import train_baseline

    with pytest.raises(RRNetError, match="not SDXL"):
        train_baseline("lora", sdxl_pipe, load_relation(relation_dir))


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_train_generate_evaluate(sdxl_model_dir, tmp_path, capsys):
    from rrnet.backbones.loading import load_pipeline
    from rrnet.world.exemplars import write_relation_folder

    bench = tmp_path / "bench"
    relation = write_relation_folder(bench, "red circle", "above", "blue square", n_images=2, size=32, seed=1)
    rectifiers = tmp_path / "rectifiers"
    code, _, err = _run(capsys, "train", "--model", sdxl_model_dir, "--data", relation, "--output_dir",
                        rectifiers / relation.name, "--epochs", 1, "--hidden_size", 8, "--no_progress")
    assert code == 0, err
    gen = tmp_path / "gen"
    code, _, err = _run(capsys, "generate", "--model", sdxl_model_dir, "--rectifier", rectifiers / relation.name,
                        "--output_dir", gen, "--alpha", 0, 1, "--num_images", 1, "--steps", 2, "--seed", 3, "--no_progress")
    assert code == 0, err
    record = json.loads((gen / "generation.json").read_text())
    prompt = record["prompts"][0]
    alpha_0, alpha_1 = (np.asarray(Image.open(gen / record["images"][prompt][a][0])) for a in ("alpha_0", "alpha_1"))
    pipe = load_pipeline(str(sdxl_model_dir), device="cpu", progress=False)
    assert is_sdxl(pipe)
    base = pipe(prompt=prompt, generator=[torch.Generator("cpu").manual_seed(3)], num_inference_steps=2,
                guidance_scale=7.5, height=32, width=32).images[0]
    assert np.array_equal(alpha_0, np.asarray(base)) and not np.array_equal(alpha_0, alpha_1)
    out = tmp_path / "eval"
    code, stdout, err = _run(capsys, "evaluate", "--model", sdxl_model_dir, "--benchmark", bench, "--rectifiers",
                             rectifiers, "--alpha", 1, "--judge", "exact", "--num_images", 1, "--steps", 2,
                             "--output_dir", out, "--no_progress")
    assert code == 0, err
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {row["method"] for row in rows} == {"base", "rrnet"} and all(row["images"] == 2 for row in rows)
    # an SD rectifier on the SDXL model: one line, before the model loads
    sd_rectifier = tmp_path / "sd"
    RelationRectifier(RectifierConfig(text_width=32, hidden=8, triplets=[{"object_a": "cat", "relation": "on", "object_b": "mat"}],
                                      prompts=[["a cat on a mat", "a mat on a cat"]])).save_pretrained(sd_rectifier)
    code, _, err = _run(capsys, "generate", "--model", sdxl_model_dir, "--rectifier", sd_rectifier,
                        "--output_dir", tmp_path / "g2", "--steps", 1, "--no_progress")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("rrnet: error:") and "(SDXL)" in lines[0], err
