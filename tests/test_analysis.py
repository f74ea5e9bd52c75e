"""The paper's analyses (rrnet.analysis) and `rrnet analyze`, on the tiny random backbone."""

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rrnet.analysis import (
    alpha_sweep,
    cross_attention_layers,
    eot_masking,
    eot_positions,
    eot_swap,
    eot_swapped_embeds,
    masked_cross_attention,
    osp_similarity,
    parse_pair,
)
from rrnet.analysis.cli import add_analyze_parser, run_analyze
from rrnet.errors import DataError, PromptError, RRNetError
from rrnet.generate import GenerationSettings, generate, prompt_embeddings
from rrnet.rectifier import RectifierConfig, RelationRectifier, encode_prompt
from rrnet.tokens import tokenize_prompt

ARB, BRA = "a red block above a blue block", "a blue block above a red block"
TRIPLET = {"object_a": "red block", "relation": "above", "object_b": "blue block"}
FAST = GenerationSettings(num_images=1, steps=2, seed=3)


def _pixels(path):
    return np.asarray(Image.open(path))


def _rectifier():
    torch.manual_seed(0)  # freshly initialised, as `rrnet.train.new_rectifier` makes it
    config = RectifierConfig(text_width=32, hidden=16, triplets=[TRIPLET], prompts=[[ARB, BRA]])
    return RelationRectifier(config)


def _cli(*argv):
    parser = argparse.ArgumentParser(prog="rrnet")
    add_analyze_parser(parser.add_subparsers(dest="command", required=True))
    run_analyze(parser.parse_args(["analyze", *argv]))


# ---- OSP EOT cosine ------------------------------------------------------------------------------


def test_osp_cosine_matches_direct_computation(tiny_pipe, tmp_path):
    report = osp_similarity(tiny_pipe, [(ARB, ARB), (ARB, BRA)])
    same, pair = report.pairs
    assert same.eot_cosine == pytest.approx(1.0, abs=1e-9) and same.word_mean_cosine == pytest.approx(1.0, abs=1e-9)
    assert pair.rectified_eot_cosine == {}
    x, y = encode_prompt(tiny_pipe, ARB), encode_prompt(tiny_pipe, BRA)
    assert pair.eot_cosine == pytest.approx(float(F.cosine_similarity(x.eot, y.eot, dim=0)), abs=1e-6)
    eot = x.tokens.eot_index
    direct = F.cosine_similarity(x.hidden[1:eot].mean(0), y.hidden[1:eot].mean(0), dim=0)
    assert pair.word_mean_cosine == pytest.approx(float(direct), abs=1e-6)
    record = json.loads(report.save(tmp_path).read_text())
    assert record["pairs"][1]["eot_cosine"] == pair.eot_cosine
    assert record["summary"]["eot_cosine_mean"] == pytest.approx((same.eot_cosine + pair.eot_cosine) / 2)


def test_rectified_cosine_at_alpha_zero_is_the_base(tiny_pipe):
    rect = _rectifier()
    pair = osp_similarity(tiny_pipe, [(ARB, BRA)], rect, alphas=(0.0, 0.8)).pairs[0]
    assert pair.rectified_eot_cosine["0"] == pytest.approx(pair.eot_cosine, abs=1e-12)
    embeds = rect.prompt_embeds(tiny_pipe, [ARB, BRA], alpha=0.8)
    eot = encode_prompt(tiny_pipe, ARB).tokens.eot_index
    direct = F.cosine_similarity(embeds[0, eot], embeds[1, eot], dim=0)
    assert pair.rectified_eot_cosine["0.8"] == pytest.approx(float(direct), abs=1e-6)
    assert pair.rectified_eot_cosine["0.8"] != pair.eot_cosine


def test_parse_pair():
    assert parse_pair(" a book on a bowl | a bowl on a book ") == ("a book on a bowl", "a bowl on a book")
    for bad in ("no separator", "a|b|c", "a|", "|b"):
        with pytest.raises(PromptError):
            parse_pair(bad)


# ---- EOT masking -------------------------------------------------------------------------------


def test_eot_positions(tiny_pipe):
    tokens = tokenize_prompt(tiny_pipe.tokenizer, ARB)
    assert eot_positions(tokens) == [tokens.eot_index]
    assert eot_positions(tokens, "eot_and_padding") == list(range(tokens.eot_index, len(tokens.input_ids)))
    with pytest.raises(RRNetError):
        eot_positions(tokens, "everything")


def test_masking_changes_images_and_keeping_is_plain_generation(tiny_pipe, tmp_path):
    settings = GenerationSettings(num_images=2, steps=2, seed=3)
    masked = eot_masking(tiny_pipe, [ARB], tmp_path / "m", settings, progress=False)
    wide = eot_masking(tiny_pipe, [ARB], tmp_path / "w", settings, mode="eot_and_padding", progress=False)
    plain = generate(tiny_pipe, [ARB], tmp_path / "p", None, settings, progress=False).images[ARB]["base"]
    folder = tmp_path / "m" / "0_a_red_block_above_a_blue_block"
    assert masked.images[0]["kept"] == [folder / "kept" / "000.png", folder / "kept" / "001.png"]
    for k in range(2):
        assert np.array_equal(_pixels(masked.images[0]["kept"][k]), _pixels(plain[k]))
        assert np.array_equal(_pixels(wide.images[0]["kept"][k]), _pixels(plain[k]))
    assert any(not np.array_equal(_pixels(m), _pixels(p)) for m, p in zip(masked.images[0]["masked"], plain))
    assert any(not np.array_equal(_pixels(m), _pixels(p)) for m, p in zip(wide.images[0]["masked"], plain))
    record = json.loads(masked.record.read_text())
    entry = record["prompts"][0]
    assert record["mode"] == "eot" and entry["masked_positions"] == [entry["eot_index"]]
    assert entry["images"]["masked"] == ["0_a_red_block_above_a_blue_block/masked/000.png",
                                         "0_a_red_block_above_a_blue_block/masked/001.png"]
    assert entry["judged"] == {"kept": None, "masked": None}  # not mini-world words
    assert masked.grid.is_file() and record["settings"]["seed"] == 3


def _unet_out(pipe, cond):
    torch.manual_seed(0)
    latents = torch.randn(2, pipe.unet.config.in_channels, 8, 8)
    uncond = prompt_embeddings(pipe, "", None, None)
    with torch.no_grad():
        return pipe.unet(latents, 10, encoder_hidden_states=torch.cat([uncond, cond])).sample


def test_mask_hits_only_the_conditional_rows_and_processors_are_restored(tiny_pipe):
    unet = tiny_pipe.unet
    before = dict(unet.attn_processors)
    cond = prompt_embeddings(tiny_pipe, ARB, None, None)
    plain = _unet_out(tiny_pipe, cond)
    positions = eot_positions(tokenize_prompt(tiny_pipe.tokenizer, ARB), "eot_and_padding")
    with masked_cross_attention(unet, cond, positions) as record:
        masked = _unet_out(tiny_pipe, cond)
    assert record.calls == len(cross_attention_layers(unet)) and record.masked_rows == record.calls
    torch.testing.assert_close(masked[0], plain[0], atol=1e-6, rtol=0)  # unconditional row untouched
    assert (masked[1] - plain[1]).abs().max() > 1e-3
    assert dict(unet.attn_processors) == before
    assert torch.equal(_unet_out(tiny_pipe, cond), plain)
    with pytest.raises(KeyError), masked_cross_attention(unet, cond, positions):
        raise KeyError("interrupted")
    assert dict(unet.attn_processors) == before
    with pytest.raises(RRNetError), masked_cross_attention(unet, cond, [500]):
        pass


# ---- EOT swap ----------------------------------------------------------------------------------


def test_eot_swap_with_itself_is_plain_generation(tiny_pipe, tmp_path):
    assert torch.equal(eot_swapped_embeds(tiny_pipe, ARB, ARB), prompt_embeddings(tiny_pipe, ARB, None, None))
    swapped = eot_swapped_embeds(tiny_pipe, ARB, "a photo of a cat")
    x, y = encode_prompt(tiny_pipe, ARB), encode_prompt(tiny_pipe, "a photo of a cat")
    assert torch.equal(swapped[0, x.tokens.eot_index], y.eot)
    keep = torch.ones(swapped.shape[1], dtype=torch.bool)
    keep[x.tokens.eot_index] = False
    assert torch.equal(swapped[0, keep], x.hidden[keep])

    result = eot_swap(tiny_pipe, [(ARB, ARB), (ARB, "a photo of a cat")], tmp_path, FAST, progress=False)
    same, other = result.images
    plain = generate(tiny_pipe, [ARB], tmp_path / "p", None, FAST, progress=False).images[ARB]["base"][0]
    assert np.array_equal(_pixels(same["eot_swapped"][0]), _pixels(plain))
    assert np.array_equal(_pixels(same["original"][0]), _pixels(plain))
    assert np.array_equal(_pixels(other["original"][0]), _pixels(plain))
    assert not np.array_equal(_pixels(other["eot_swapped"][0]), _pixels(plain))
    record = json.loads(result.record.read_text())
    assert [p["eot_from"] for p in record["pairs"]] == [ARB, "a photo of a cat"]
    assert (tmp_path / "1_a_red_block_above_a_blue_block" / "eot_source" / "000.png").is_file()


# ---- alpha sweep -------------------------------------------------------------------------------


def test_alpha_sweep_writes_generation_outputs_and_record(tiny_pipe, tmp_path):
    result = alpha_sweep(tiny_pipe, _rectifier(), [ARB, BRA], tmp_path, alphas=(0.0, 0.8), settings=FAST, progress=False)
    for name in ("generation.json", "grid.png", "alpha_sweep.json",
                 "0_a_red_block_above_a_blue_block/alpha_0.8/000.png", "1_a_blue_block_above_a_red_block/alpha_0/000.png"):
        assert (tmp_path / name).is_file(), name
    record = json.loads(result.record.read_text())
    assert record["alphas"] == [0.0, 0.8] and record["judged"] is None
    cosines = record["eot_cosine_between_prompts"]
    assert set(cosines) == {"base", "alpha_0", "alpha_0.8"}
    assert cosines["alpha_0"] == pytest.approx(cosines["base"], abs=1e-12)
    with pytest.raises(RRNetError):
        alpha_sweep(tiny_pipe, _rectifier(), [ARB], tmp_path / "none", alphas=(), settings=FAST, progress=False)


def test_mini_world_images_are_judged(tmp_path):
    from rrnet.backbones.loading import load_pipeline
    from rrnet.world.record import shipped_backbone

    model = shipped_backbone()
    if not (model / "model_index.json").is_file():
        pytest.skip("no shipped mini-world backbone")
    pipe = load_pipeline(str(model), device="cpu", progress=False)
    prompt = "a red circle above a blue square"
    result = eot_masking(pipe, [prompt], tmp_path, GenerationSettings(num_images=2, steps=2, guidance_scale=4.0),
                         triplet=("blue square", "above", "red circle"), progress=False)
    judged = json.loads(result.record.read_text())["prompts"][0]["judged"]
    for variant in ("kept", "masked"):
        assert judged[variant]["judged_as"] == ["red circle", "above", "blue square"]  # the prompt's own direction
        assert judged[variant]["n"] == 2 and 0 <= judged[variant]["relation_accuracy"] <= 1


# ---- CLI ---------------------------------------------------------------------------------------


def test_cli_subcommands_end_to_end(tiny_model_dir, tmp_path, capsys):
    model = ["--model", str(tiny_model_dir), "--no_progress"]
    sampling = ["--num_images", "1", "--steps", "2", "--seed", "1"]
    rect_dir = _rectifier().save_pretrained(tmp_path / "rect")
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text(f"# object-swapped prompts\n\n{ARB}|{BRA}\n")

    _cli("osp", *model, "--pairs", f"{ARB}|{BRA}", "--pairs_file", str(pairs_file), "--rectifier", str(rect_dir),
         "--alpha", "0", "0.5", "--output_dir", str(tmp_path / "osp"))
    osp = json.loads((tmp_path / "osp" / "osp.json").read_text())
    assert len(osp["pairs"]) == 2 and set(osp["pairs"][0]["rectified_eot_cosine"]) == {"0", "0.5"}
    assert osp["model"] == str(tiny_model_dir)
    _cli("osp", *model, "--rectifier", str(rect_dir), "--output_dir", str(tmp_path / "osp2"))  # the rectifier's pair
    assert json.loads((tmp_path / "osp2" / "osp.json").read_text())["pairs"][0]["prompt"] == ARB

    _cli("mask-eot", *model, *sampling, "--prompt", ARB, BRA, "--mask", "eot_and_padding", "--output_dir", str(tmp_path / "mask"))
    mask = json.loads((tmp_path / "mask" / "eot_mask.json").read_text())
    assert mask["mode"] == "eot_and_padding" and len(mask["prompts"]) == 2

    _cli("swap-eot", *model, *sampling, "--prompt", ARB, "--eot_from", BRA, "--output_dir", str(tmp_path / "swap"))
    assert json.loads((tmp_path / "swap" / "eot_swap.json").read_text())["pairs"][0]["eot_from"] == BRA

    _cli("alpha-sweep", *model, *sampling, "--rectifier", str(rect_dir), "--alpha", "0", "1",
         "--output_dir", str(tmp_path / "sweep"))
    sweep = json.loads((tmp_path / "sweep" / "alpha_sweep.json").read_text())
    assert sweep["prompts"] == [ARB, BRA] and sweep["rectifier"] == str(rect_dir)
    assert (tmp_path / "sweep" / "grid.png").is_file()
    assert "EOT cosine" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["osp", "--pairs", "only one prompt"], PromptError),
        (["osp", "--pairs", "a|b|c"], PromptError),
        (["osp", "--pairs_file", "missing.txt"], DataError),
        (["osp", "--pairs", "a|b", "--alpha", "0.5"], RRNetError),
        (["swap-eot", "--prompt", "x", "y", "--eot_from", "z"], RRNetError),
        (["mask-eot", "--prompt", "x", "--steps", "0"], SystemExit),  # refused by its argparse type
    ],
)
def test_cli_user_errors(tiny_model_dir, tmp_path, argv, error):
    with pytest.raises(error):
        _cli(*argv, "--model", str(tiny_model_dir), "--output_dir", str(tmp_path), "--no_progress")


def test_bad_pairs_file_line_is_named(tiny_model_dir, tmp_path):
    bad = tmp_path / "pairs.txt"
    bad.write_text(f"{ARB}|{BRA}\nnot a pair\n")
    with pytest.raises(DataError, match=r"pairs.txt:2: "):
        _cli("osp", "--model", str(tiny_model_dir), "--pairs_file", str(bad), "--output_dir", str(tmp_path / "o"))
