"""`rrnet generate` checks every prompt before its first image and leaves no result a kill cut short."""

from __future__ import annotations

import json
import signal

import pytest
from PIL import Image

from rrnet.cli import main
from rrnet.errors import PromptError
from rrnet.generate import GenerationSettings, generate

from kill_switch import run_killed


def test_second_prompt_is_checked_before_the_first_image(tiny_pipe, tmp_path):
    out = tmp_path / "gen"
    with pytest.raises(PromptError, match="at most 77"):
        generate(tiny_pipe, ["a red block above a blue block", "a blue block" + " in a big room" * 30], out,
                 settings=GenerationSettings(num_images=1, steps=1), progress=False)
    assert not out.exists()


def _generate_args(model, out):
    return [str(a) for a in ["generate", "--model", model, "--prompt", "a red block above a blue block",
                             "a blue block above a red block", "--num_images", 3, "--steps", 1, "--output_dir", out,
                             "--no_progress"]]


def _images(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "gen"
    assert main(_generate_args(tiny_model_dir, out)) == 0
    return out


@pytest.mark.parametrize(("when", "pattern"), [
    ("after", r"^001\.png$"),          # mid generation
    ("before", r"^grid\.png$"),        # every image written, the grid not yet
    ("before", r"^generation\.json$"),  # the last write: the record
], ids=["mid-generation", "before-grid", "before-record"])
def test_killed_generation_leaves_no_record_and_a_rerun_matches(tiny_model_dir, reference, tmp_path, capsys, when,
                                                                pattern):
    out = tmp_path / "gen"
    killed = run_killed(when, pattern, *_generate_args(tiny_model_dir, out))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "generation.json").exists()
    for png in out.rglob("*.png"):
        with Image.open(png) as image:
            image.verify()  # every image on disk is whole
    assert main(_generate_args(tiny_model_dir, out)) == 0
    capsys.readouterr()
    assert _images(out) == _images(reference)
    record = json.loads((out / "generation.json").read_text())
    assert record["prompts"] == json.loads((reference / "generation.json").read_text())["prompts"]
    assert not [p for p in out.rglob(".*")]  # no temporaries left behind


def test_a_killed_rerun_never_leaves_the_previous_record(tiny_model_dir, reference, tmp_path, capsys):
    out = tmp_path / "gen"
    first = _generate_args(tiny_model_dir, out)
    first[first.index("--num_images") + 1] = "1"
    assert main(first) == 0 and (out / "generation.json").is_file()
    killed = run_killed("after", r"^001\.png$", *_generate_args(tiny_model_dir, out))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "generation.json").exists() and not (out / "grid.png").exists()
    assert main(_generate_args(tiny_model_dir, out)) == 0
    capsys.readouterr()
    assert _images(out) == _images(reference)


def test_a_previous_result_is_replaced_not_mixed(tiny_pipe, tmp_path):
    out = tmp_path / "gen"
    generate(tiny_pipe, ["a red block above a blue block"], out, settings=GenerationSettings(num_images=3, steps=1),
             progress=False)
    generate(tiny_pipe, ["a red block above a blue block"], out, settings=GenerationSettings(num_images=1, steps=1),
             progress=False)
    assert sorted(p.name for p in out.rglob("*.png") if p.name != "grid.png") == ["000.png"]
