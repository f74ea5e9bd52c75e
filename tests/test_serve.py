"""`rrnet serve` without a browser: the generation function, input checks, the page handler, the
command's errors and its default (shipped mini world, rectifier trained once and cached)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from rrnet.cli import main
from rrnet.errors import RRNetError
from rrnet.rectifier import RectifierConfig, RelationRectifier
from rrnet.serve import DISPLAY_SIZE, NO_RELATION, ServeModel, check_request, enlarge, page_handler

torch.set_num_threads(1)

PROMPT = "a red block above a blue block"


def _rectifier() -> RelationRectifier:
    torch.manual_seed(0)
    config = RectifierConfig(text_width=32, hidden=16,
                             triplets=[{"object_a": "red block", "relation": "above", "object_b": "blue block"}],
                             prompts=[[PROMPT, "a blue block above a red block"]])
    rectifier = RelationRectifier(config)
    for p in rectifier.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return rectifier


@pytest.fixture()
def model(tiny_pipe) -> ServeModel:
    return ServeModel(tiny_pipe, _rectifier(), guidance_scale=7.5, default_steps=3)


def _px(image) -> np.ndarray:
    return np.asarray(image)


def test_base_and_rectified_share_the_noise_and_differ_only_with_alpha(model):
    zero = model.generate(PROMPT, 0.0, 5, 3)
    assert np.array_equal(_px(zero.base), _px(zero.rectified))  # alpha 0 is the base model
    assert zero.triplets == "(red block, above, blue block)"
    out = model.generate(PROMPT, 1.0, 5, 3)
    assert np.array_equal(_px(out.base), _px(zero.base))
    assert not np.array_equal(_px(out.base), _px(out.rectified))
    again = model.generate(PROMPT, 1.0, 5, 3)  # same seed, same images
    assert np.array_equal(_px(again.base), _px(out.base)) and np.array_equal(_px(again.rectified), _px(out.rectified))
    other = model.generate(PROMPT, 1.0, 6, 3)
    assert not np.array_equal(_px(other.base), _px(out.base))


def test_triplet_is_read_from_the_prompt_and_unknown_relations_pass_through(model):
    swapped = model.generate("a blue block above a red block", 1.0, 0, 2)
    assert swapped.triplets == "(blue block, above, red block)"
    plain = model.generate("a red block and a blue block", 1.0, 0, 2)
    assert plain.triplets.startswith(NO_RELATION) and "above" in plain.triplets
    assert np.array_equal(_px(plain.base), _px(plain.rectified))


@pytest.mark.parametrize(("args", "fragment"), [
    (("", 0.5, 0, 3), "enter a prompt"),
    (("   ", 0.5, 0, 3), "enter a prompt"),
    ((PROMPT, math.nan, 0, 3), "alpha must be a finite number"),
    ((PROMPT, math.inf, 0, 3), "alpha must be a finite number"),
    ((PROMPT, None, 0, 3), "alpha must be a number"),
    ((PROMPT, 0.5, 0, 0), "steps must be an integer from 1"),
    ((PROMPT, 0.5, 0, 2.5), "steps must be a whole number"),
    ((PROMPT, 0.5, 0, None), "steps must be a whole number"),
    ((PROMPT, 0.5, -1, 3), "seed must be an integer from 0"),
    ((PROMPT, 0.5, None, 3), "seed must be a whole number"),
])
def test_bad_inputs_are_one_clear_message(args, fragment):
    with pytest.raises(RRNetError, match=fragment):
        check_request(*args)


def test_check_request_normalises():
    assert check_request("  a  red block ", "0.5", 3.0, 4) == ("a red block", 0.5, 3, 4)
    assert check_request(PROMPT, 1, 2**62 + 1, 1)[2] == 2**62 + 1  # exact past float precision


def test_page_handler_shows_errors_as_text_and_images_enlarged(model):
    handle = page_handler(model)
    base, rectified, triplets, status = handle("", 0.5, 0, 3)
    assert base is None and rectified is None and triplets == ""
    assert status.startswith("**Error:**") and "enter a prompt" in status
    status = handle(PROMPT, 0.5, 0, 0)[3]
    assert "steps must be an integer from 1" in status
    too_long = " ".join(["red block above blue block"] * 30)
    assert "Error" in handle(too_long, 0.5, 0, 2)[3]
    base, rectified, triplets, status = handle(PROMPT, 0.5, 0, 2)
    size = model.generate(PROMPT, 0.5, 0, 2).base.width
    assert base.size == rectified.size == (size * (DISPLAY_SIZE // size),) * 2
    assert np.array_equal(_px(base), _px(enlarge(model.generate(PROMPT, 0.5, 0, 2).base)))
    assert triplets == "(red block, above, blue block)"
    assert status == "seed 0, 2 steps, guidance 7.5, alpha 0.5"


def test_build_app_has_the_page_controls(model):
    pytest.importorskip("gradio")
    from rrnet.serve import build_app

    app = build_app(model)
    ids = {getattr(block, "elem_id", None) for block in app.blocks.values()}
    assert {"prompt", "alpha", "seed", "steps", "generate", "base-image", "rectified-image", "triplets", "status"} <= ids


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_without_gradio_one_error_line_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    code, _, err = _run(capsys, "serve")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("rrnet: error:") and "pip install 'rrnet[serve]'" in err


@pytest.fixture()
def no_gradio_needed(monkeypatch):
    """The command's checks run before Gradio is used: a stand-in module lets them run without it."""
    monkeypatch.setattr("rrnet.serve.import_gradio", lambda: object())


def test_a_model_other_than_a_mini_world_needs_a_rectifier(tiny_model_dir, no_gradio_needed, capsys):
    code, _, err = _run(capsys, "serve", "--model", tiny_model_dir)
    assert code == 2 and "--rectifier is required" in err and "Traceback" not in err


def test_missing_or_foreign_rectifier_is_one_line(tiny_model_dir, tmp_path, no_gradio_needed, capsys):
    code, _, err = _run(capsys, "serve", "--model", tiny_model_dir, "--rectifier", tmp_path / "missing")
    assert code == 2 and err.count("\n") == 1 and "not found" in err
    wide = RelationRectifier(RectifierConfig(text_width=64, hidden=8))
    wide.save_pretrained(tmp_path / "wide")
    code, _, err = _run(capsys, "serve", "--model", tiny_model_dir, "--rectifier", tmp_path / "wide")
    assert code == 2 and "width 64" in err


def test_no_arguments_serves_the_shipped_world_with_a_rectifier_trained_once(tmp_path, monkeypatch, capsys):
    gr = pytest.importorskip("gradio")
    import rrnet.serve as serve
    from rrnet.world.record import shipped_backbone, world_sampling

    monkeypatch.setenv("RRNET_CACHE", str(tmp_path / "cache"))
    launched, models = [], []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: launched.append(kw) or (None, "http://127.0.0.1:1/", None))
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: None)
    real_build = serve.build_app
    monkeypatch.setattr(serve, "build_app", lambda model, **kw: models.append(model) or real_build(model, **kw))

    code, out, err = _run(capsys, "serve", "--epochs", 1, "--no_progress", "--port", 7999)
    assert code == 0, err
    assert "training the demo's rectifier" in err and "open http://127.0.0.1:1/" in out
    assert launched[0]["server_port"] == 7999 and launched[0]["server_name"] == "127.0.0.1" and not launched[0]["share"]
    trained = sorted((tmp_path / "cache" / "serve").glob("*/rectifier/rectifier.safetensors"))
    assert len(trained) == 1

    def must_not_train(*args, **kwargs):
        raise AssertionError("the cached rectifier should be reused")

    monkeypatch.setattr("rrnet.demo.train_demo_rectifier", must_not_train)
    code, _, err = _run(capsys, "--verbose", "serve", "--epochs", 1, "--no_progress")
    assert code == 0, err
    assert "using the cached rectifier" in err  # a note: shown with --verbose
    code, _, err = _run(capsys, "serve", "--epochs", 1, "--no_progress")
    assert code == 0 and err == "", err

    model = models[-1]
    sampling = world_sampling(shipped_backbone())
    assert model.default_steps == sampling["num_inference_steps"] and model.guidance_scale == sampling["guidance_scale"]
    out = model.generate("a blue square above a red circle", 1.0, 0, 2)
    assert out.triplets == "(blue square, above, red circle)" and out.base.size == (32, 32)


def test_a_taken_port_is_one_error_line(tiny_model_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("gradio")
    import socket

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    _rectifier().save_pretrained(tmp_path / "rectifier")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = _run(capsys, "serve", "--model", tiny_model_dir, "--rectifier", tmp_path / "rectifier",
                            "--port", port, "--no_progress")
    assert code == 2 and f"cannot serve on 127.0.0.1:{port}" in err and "Traceback" not in err


def test_literally_no_arguments_serves_the_shipped_world_with_the_demo_recipe(tmp_path, monkeypatch, capsys):
    """`rrnet serve` and nothing else: the shipped world, the demo's rectifier at the demo recipe's
    epochs (trained here for one epoch only, to keep the test short), the default local port."""
    gr = pytest.importorskip("gradio")
    import rrnet.demo as demo
    from rrnet.recipes import recipe_config
    from rrnet.world.record import shipped_backbone

    monkeypatch.setenv("RRNET_CACHE", str(tmp_path / "cache"))
    launched, asked = [], []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: launched.append(kw) or (None, "http://127.0.0.1:2/", None))
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: None)
    real_train = demo.train_demo_rectifier

    def short_train(pipe, model_dir, out, epochs, **kwargs):
        asked.append((str(model_dir), epochs))
        return real_train(pipe, model_dir, out, 1, **kwargs)

    monkeypatch.setattr(demo, "train_demo_rectifier", short_train)
    code, out, err = _run(capsys, "serve")
    assert code == 0, err
    assert asked == [(str(shipped_backbone()), recipe_config(demo.DEMO_RECIPE).epochs)]
    assert launched[0]["server_port"] == 7860 and launched[0]["server_name"] == "127.0.0.1" and not launched[0]["share"]
    assert "open http://127.0.0.1:2/" in out and "training the demo's rectifier" in err
