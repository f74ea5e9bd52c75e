"""The paper's baselines: personalized text encoder, textual inversion, UNet LoRA (tiny backbone, CPU)."""

import argparse
import json
import math

import pytest
import torch

from rrnet.baselines import BaselineConfig, load_method, train_baseline
from rrnet.baselines.cli import add_baseline_parser, run_baseline
from rrnet.baselines.textual_inversion import prompt_side, relation_tokens, with_token
from rrnet.data import load_relation
from rrnet.errors import CheckpointError, PromptError, RRNetError

KINDS = ("personalized", "textual_inversion", "lora")
FAST = {"epochs": 2, "learning_rate": 1e-3}


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _pipeline_fingerprint(pipe):
    """Everything training or a method could leave changed in the pipeline."""
    te = pipe.text_encoder
    return {
        "states": {name: _state(getattr(pipe, name)) for name in ("text_encoder", "unet", "vae")},
        "grad_flags": {name: [p.requires_grad for p in getattr(pipe, name).parameters()] for name in ("text_encoder", "unet", "vae")},
        "training": [pipe.text_encoder.training, pipe.unet.training, pipe.vae.training],
        "tokenizer": (len(pipe.tokenizer), pipe.tokenizer("a red block above <x-arb>").input_ids),
        "embedding": (te.get_input_embeddings().num_embeddings, te.config.vocab_size),
        "unet_modules": [type(m).__name__ for m in pipe.unet.modules()],
        "peft": bool(getattr(pipe.unet, "peft_config", None)),
    }


def _assert_pipeline_unchanged(before, pipe):
    after = _pipeline_fingerprint(pipe)
    for name in before["states"]:
        assert _same(before["states"][name], after["states"][name]), name
    for key in ("grad_flags", "training", "tokenizer", "embedding", "unet_modules", "peft"):
        assert before[key] == after[key], key


@torch.no_grad()
def _unet_out(pipe, embeds):
    g = torch.Generator().manual_seed(1)
    size = pipe.unet.config.sample_size
    latents = torch.randn(1, 4, size, size, generator=g)
    return pipe.unet(latents, torch.tensor([500]), encoder_hidden_states=embeds).sample


@torch.no_grad()
def _text_out(pipe, prompt="a red block above a blue block"):
    return pipe.encode_prompt(prompt, "cpu", 1, False)[0]


@pytest.fixture()
def spec(relation_dir):
    return load_relation(relation_dir)


# ------------------------------------------------------------------------------ training


@pytest.mark.parametrize("kind", KINDS)
def test_baseline_trains_only_its_part_and_leaves_the_pipeline_as_it_was(kind, tiny_pipe, spec, tmp_path):
    before = _pipeline_fingerprint(tiny_pipe)
    out = tmp_path / "ckpt"
    learned, history = train_baseline(kind, tiny_pipe, spec, BaselineConfig(**FAST), out, progress=False)

    _assert_pipeline_unchanged(before, tiny_pipe)
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    assert all(len(h["losses"]) == 4 for h in history)  # 2 prompt + 2 swapped images per epoch
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    record = json.loads((out / "baseline.json").read_text())
    assert record["kind"] == kind and record["relation"]["name"] == "above"
    assert record["training"]["epochs"] == 2 and record["training"]["learning_rate"] == 1e-3
    assert record["training"]["resolution"] == 32 and record["backbone_dtype"] == "float32"

    # "Moved" means moved by gradient steps: AdamW moves a weight with a gradient by about the
    # learning rate per step, while weight decay alone moves it by lr * decay * |w| (1e-5 * |w| here)
    moved_by_gradients = 0.5 * FAST["learning_rate"]
    if kind == "personalized":  # the tuned copy moved away from the frozen original
        original = before["states"]["text_encoder"]
        tuned = learned.state_dict()
        assert max((original[k].float() - tuned[k].float()).abs().max().item() for k in original) > moved_by_gradients
        assert (out / "text_encoder" / "model.safetensors").is_file()
    elif kind == "textual_inversion":  # the tokens moved away from the relation word's embedding
        table = tiny_pipe.text_encoder.get_input_embeddings().weight
        start = table[tiny_pipe.tokenizer("above", add_special_tokens=False).input_ids].mean(0)
        assert set(learned) == {"<above-arb>", "<above-bra>"}
        assert all((v.float() - start.float()).abs().max().item() > moved_by_gradients for v in learned.values())
        assert (out / "learned_embeds.safetensors").is_file() and (out / "learned_embeds_swapped.safetensors").is_file()
    else:  # LoRA up-projections start at zero and have learned something
        ups = [v for k, v in learned.items() if "lora.up" in k]
        assert len(ups) == len(learned) // 2 > 0 and all(v.abs().sum() > 0 for v in ups)
        assert (out / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_weights(kind, tiny_pipe, spec):
    def run(seed):
        learned, _ = train_baseline(kind, tiny_pipe, spec, BaselineConfig(**FAST, seed=seed), progress=False)
        return learned.state_dict() if isinstance(learned, torch.nn.Module) else learned

    first, again, other = run(0), run(0), run(1)
    assert _same(first, again)
    assert not _same(first, other)


def test_v_prediction_and_batches(tiny_pipe, spec):
    from diffusers import PNDMScheduler

    tiny_pipe.scheduler = PNDMScheduler.from_config(tiny_pipe.scheduler.config, prediction_type="v_prediction")
    config = BaselineConfig(epochs=1, batch_size=3, importance_sampling=True)
    _, history = train_baseline("lora", tiny_pipe, spec, config, progress=False)
    assert [len(h["losses"]) for h in history] == [2] and math.isfinite(history[0]["loss"])


def test_bad_settings_are_one_line_errors(tiny_pipe, spec):
    with pytest.raises(RRNetError, match="epochs"):
        train_baseline("lora", tiny_pipe, spec, BaselineConfig(epochs=0), progress=False)
    with pytest.raises(RRNetError, match="unknown baseline"):
        train_baseline("dreambooth", tiny_pipe, spec, BaselineConfig(epochs=1), progress=False)


# ------------------------------------------------------------------------------ file formats


def test_textual_inversion_files_load_with_diffusers(tiny_pipe, tiny_model_dir, spec, tmp_path):
    from safetensors.torch import load_file

    from rrnet.backbones.loading import load_pipeline

    vectors, _ = train_baseline("textual_inversion", tiny_pipe, spec, BaselineConfig(**FAST), tmp_path, progress=False)
    saved = load_file(tmp_path / "learned_embeds.safetensors")
    assert list(saved) == ["<above-arb>"] and saved["<above-arb>"].shape == (1, 32)

    pipe = load_pipeline(str(tiny_model_dir), device="cpu", progress=False)
    pipe.load_textual_inversion(tmp_path)  # the folder: diffusers' default file name
    pipe.load_textual_inversion(tmp_path / "learned_embeds_swapped.safetensors", token="<above-bra>")
    for token, vector in vectors.items():
        ids = pipe.tokenizer(token, add_special_tokens=False).input_ids
        assert len(ids) == 1 and ids[0] == pipe.tokenizer.convert_tokens_to_ids(token)
        assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[ids[0]], vector)


def test_shared_token_writes_one_file(tiny_pipe, spec, tmp_path):
    vectors, _ = train_baseline("textual_inversion", tiny_pipe, spec, BaselineConfig(epochs=1, shared_token=True),
                                tmp_path, progress=False)
    assert list(vectors) == ["<above-rel>"]
    assert not (tmp_path / "learned_embeds_swapped.safetensors").exists()
    method = load_method("textual-inversion", tmp_path)
    with method.applied(tiny_pipe, spec) as condition:
        assert condition(spec.prompt, None).shape == (1, 77, 32)


def test_lora_file_loads_with_diffusers_and_unloads_exactly(tiny_pipe, spec, tmp_path):
    train_baseline("lora", tiny_pipe, spec, BaselineConfig(**FAST), tmp_path, progress=False)
    embeds = _text_out(tiny_pipe)
    base = _unet_out(tiny_pipe, embeds)
    tiny_pipe.load_lora_weights(tmp_path)
    assert not torch.equal(_unet_out(tiny_pipe, embeds), base)
    tiny_pipe.unload_lora_weights()
    assert torch.equal(_unet_out(tiny_pipe, embeds), base)


def test_personalized_checkpoint_reloads(tiny_pipe, spec, tmp_path):
    from transformers import CLIPTextModel

    tuned, _ = train_baseline("personalized", tiny_pipe, spec, BaselineConfig(**FAST), tmp_path, progress=False)
    assert _same(CLIPTextModel.from_pretrained(tmp_path / "text_encoder").state_dict(), tuned.state_dict())


# ------------------------------------------------------------------------------ evaluation methods


@pytest.mark.parametrize("kind", KINDS)
def test_method_changes_the_pipeline_inside_and_restores_it_after(kind, tiny_pipe, spec, tmp_path):
    root = tmp_path / "baselines"
    train_baseline(kind, tiny_pipe, spec, BaselineConfig(**FAST), root / spec.name, progress=False)
    method = load_method(kind, root)
    assert method.name == kind and method.settings() == [None]
    assert method.describe() == {"method": kind, "baseline": kind, "checkpoints": str(root)}

    base_embeds = {p: _text_out(tiny_pipe, p) for p in (spec.prompt, spec.swapped_prompt)}
    base_unet = _unet_out(tiny_pipe, base_embeds[spec.prompt])
    before = _pipeline_fingerprint(tiny_pipe)
    rng = torch.get_rng_state()
    with method.applied(tiny_pipe, spec) as condition:
        embeds = {p: condition(p, None) for p in base_embeds}
        unet = _unet_out(tiny_pipe, base_embeds[spec.prompt])
        if kind == "lora":  # text untouched, UNet changed
            assert all(torch.equal(embeds[p], base_embeds[p]) for p in embeds)
            assert not torch.equal(unet, base_unet)
        else:  # conditioning changed, UNet untouched
            assert all(not torch.equal(embeds[p], base_embeds[p]) for p in embeds)
            assert torch.equal(unet, base_unet)
        if kind == "textual_inversion":
            assert {"<above-arb>", "<above-bra>"} <= set(tiny_pipe.tokenizer.get_vocab())
    assert torch.equal(torch.get_rng_state(), rng)
    _assert_pipeline_unchanged(before, tiny_pipe)
    assert all(torch.equal(_text_out(tiny_pipe, p), e) for p, e in base_embeds.items())
    assert torch.equal(_unet_out(tiny_pipe, base_embeds[spec.prompt]), base_unet)


def test_textual_inversion_method_uses_the_trained_embeddings(tiny_pipe, spec, tmp_path):
    vectors, _ = train_baseline("textual_inversion", tiny_pipe, spec, BaselineConfig(**FAST), tmp_path, progress=False)
    with load_method("textual_inversion", tmp_path).applied(tiny_pipe, spec) as condition:
        table = tiny_pipe.text_encoder.get_input_embeddings().weight
        for token, vector in vectors.items():
            assert torch.equal(table[tiny_pipe.tokenizer.convert_tokens_to_ids(token)], vector)
        rewritten = _text_out(tiny_pipe, "a red block <above-arb> a blue block")
        assert torch.equal(condition(spec.prompt, None), rewritten)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_or_wrong_checkpoint_is_one_line_error(kind, tiny_pipe, spec, tmp_path):
    with pytest.raises(CheckpointError):
        load_method(kind, tmp_path / "nowhere")
    with pytest.raises(CheckpointError) as missing, load_method(kind, tmp_path).applied(tiny_pipe, spec):
        pass
    assert "\n" not in str(missing.value) and "above" in str(missing.value)
    other = "lora" if kind != "lora" else "personalized"
    train_baseline(other, tiny_pipe, spec, BaselineConfig(epochs=1), tmp_path / "other", progress=False)
    before = _pipeline_fingerprint(tiny_pipe)
    with pytest.raises(CheckpointError, match="expected") as wrong, load_method(kind, tmp_path / "other").applied(tiny_pipe, spec):
        pass
    assert "\n" not in str(wrong.value)
    _assert_pipeline_unchanged(before, tiny_pipe)


# ------------------------------------------------------------------------------ prompts and CLI


def test_relation_word_becomes_the_token(spec):
    assert with_token("A red block Above a blue block", "above", "<t>") == "A red block <t> a blue block"
    assert with_token("a book is placed on a bowl", "placed", "<t>") == "a book is <t> on a bowl"
    assert with_token("a cup to the  left of a jar", "to the left of", "<t>") == "a cup <t> a jar"
    with pytest.raises(PromptError):
        with_token("a red block aboveground", "above", "<t>")
    assert relation_tokens(spec) == {"prompt": "<above-arb>", "swapped": "<above-bra>"}
    assert prompt_side(spec.swapped_prompt, spec) == "swapped"
    assert prompt_side("a photo of a red block above a blue block", spec) == "prompt"
    assert prompt_side("a blue block stacked above a red block", spec) == "swapped"


@pytest.mark.parametrize("cli_kind", ["personalized", "textual-inversion", "lora"])
def test_cli_writes_the_output_folder(cli_kind, tiny_model_dir, relation_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="rrnet")
    add_baseline_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out"
    args = parser.parse_args([
        "baseline", cli_kind, "--model", str(tiny_model_dir), "--data", str(relation_dir), "--output_dir", str(out),
        "--epochs", "1", "--learning_rate", "1e-3", "--seed", "3", "--device", "cpu", "--no_progress",
    ])
    run_baseline(args)
    record = json.loads((out / "baseline.json").read_text())
    assert record["kind"] == cli_kind.replace("-", "_") and record["backbone"] == str(tiny_model_dir)
    assert record["training"]["seed"] == 3 and (out / "train_log.jsonl").is_file()
    assert "checkpoint saved" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a flag out of range is refused while parsing
        parser.parse_args([
            "baseline", cli_kind, "--model", str(tiny_model_dir), "--data", str(relation_dir),
            "--output_dir", str(out), "--epochs", "0",
        ])
    assert "--epochs: must be a positive integer" in capsys.readouterr().err
