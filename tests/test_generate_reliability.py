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


def test_killed_generation_leaves_no_record_and_a_rerun_matches(tiny_model_dir, tmp_path, capsys):
    def args(out):
        return ["generate", "--model", tiny_model_dir, "--prompt", "a red block above a blue block",
                "a blue block above a red block", "--num_images", 3, "--steps", 1, "--output_dir", out, "--no_progress"]

    reference = tmp_path / "ref"
    assert main([str(a) for a in args(reference)]) == 0
    out = tmp_path / "gen"
    killed = run_killed("after", r"^001\.png$", *args(out))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "generation.json").exists() and not (out / "grid.png").exists()
    for png in out.rglob("*.png"):
        with Image.open(png) as image:
            image.verify()  # every image on disk is whole
    assert main([str(a) for a in args(out)]) == 0
    capsys.readouterr()
    images = lambda d: {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*.png"))}
    assert images(out) == images(reference)
    record = json.loads((out / "generation.json").read_text())
    assert record["prompts"] == json.loads((reference / "generation.json").read_text())["prompts"]


def test_a_previous_result_is_replaced_not_mixed(tiny_pipe, tmp_path):
    out = tmp_path / "gen"
    generate(tiny_pipe, ["a red block above a blue block"], out, settings=GenerationSettings(num_images=3, steps=1),
             progress=False)
    generate(tiny_pipe, ["a red block above a blue block"], out, settings=GenerationSettings(num_images=1, steps=1),
             progress=False)
    assert sorted(p.name for p in out.rglob("*.png") if p.name != "grid.png") == ["000.png"]
