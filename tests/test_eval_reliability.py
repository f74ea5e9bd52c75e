"""Evaluation never reports stale or mixed numbers: images are keyed by what made them, broken
files are made again, bad inputs are refused before any work, a kill loses nothing."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from PIL import Image

from rrnet.cli import main
from rrnet.data import find_relations
from rrnet.errors import CheckpointError, DataError, PromptError
from rrnet.eval.judges.base import JudgeResult
from rrnet.eval.judges.factory import JudgeFactory
from rrnet.eval.methods import BaseMethod, RectifierMethod
from rrnet.eval.runner import EvalSettings, evaluate
from rrnet.train import TrainConfig, new_rectifier

from conftest import write_relation
from kill_switch import run_killed

SETTINGS = EvalSettings(num_images=2, seed=0, steps=1, guidance_scale=2.0, batch_size=2)


class FirstPixelJudge:
    """Calls an image correct when its first pixel is brighter than mid-grey: cheap and deterministic."""

    name = label = "pixel"

    def describe(self):
        return {"judge": self.name}

    def judge(self, images, query):
        return [JudgeResult(True, True, True, "ARB" if sum(im.getpixel((0, 0))) > 384 else "BRA") for im in images]


@pytest.fixture()
def bench(tmp_path):
    root = tmp_path / "bench"
    write_relation(root)
    return root


def _rectifiers(pipe, bench, root, seed):
    for spec in find_relations(bench):
        rect = new_rectifier(pipe, TrainConfig(hidden=8, heads=1, seed=seed), spec)
        with torch.no_grad():  # a fresh output layer can start near zero: make alpha visible
            for p in rect.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
        rect.save_pretrained(root / spec.name)
    return root


def _evaluate(pipe, model_dir, bench, out, methods, judge=None, settings=SETTINGS, loads=None):
    def load():
        if loads is not None:
            loads.append(1)
        return pipe

    return evaluate(load, str(model_dir), find_relations(bench), methods, [judge or FirstPixelJudge()], out, settings,
                    progress=False)


def _pngs(out):
    return {p.relative_to(out): p.read_bytes() for p in sorted((out / "images").rglob("*.png"))}


def test_retrained_rectifier_makes_its_images_stale(tiny_pipe, tiny_model_dir, bench, tmp_path):
    rects, out = _rectifiers(tiny_pipe, bench, tmp_path / "rect", seed=1), tmp_path / "out"
    first = _evaluate(tiny_pipe, tiny_model_dir, bench, out, [BaseMethod(), RectifierMethod(rects, (1.0,))])
    before = _pngs(out)
    assert first["generation"]["images_generated_this_run"] == 8 and not first["generation"]["stale_folders_regenerated"]

    again = _evaluate(tiny_pipe, tiny_model_dir, bench, out, [BaseMethod(), RectifierMethod(rects, (1.0,))])
    assert again["generation"]["images_generated_this_run"] == 0 and _pngs(out) == before

    _rectifiers(tiny_pipe, bench, rects, seed=2)  # retrained in place: same path, new weights
    third = _evaluate(tiny_pipe, tiny_model_dir, bench, out, [BaseMethod(), RectifierMethod(rects, (1.0,))])
    stale = third["generation"]["stale_folders_regenerated"]
    assert third["generation"]["images_generated_this_run"] == 4 and len(stale) == 2
    assert all("/rrnet/" in folder for folder in stale)
    after = _pngs(out)
    assert {k: v for k, v in after.items() if "base" in k.parts} == {k: v for k, v in before.items() if "base" in k.parts}
    assert any(after[k] != before[k] for k in after if "rrnet" in k.parts)


@pytest.mark.parametrize("damage", [b"", b"\x89PNG\r\n\x1a\n\x00\x00"], ids=["zero-bytes", "truncated"])
def test_broken_image_in_a_resumed_folder_is_made_again(tiny_pipe, tiny_model_dir, bench, tmp_path, damage):
    out = tmp_path / "out"
    _evaluate(tiny_pipe, tiny_model_dir, bench, out, [BaseMethod()])
    before = _pngs(out)
    victim = next((out / "images").rglob("001.png"))
    victim.write_bytes(damage if damage else b"")
    if damage:
        victim.write_bytes(before[victim.relative_to(out)][: len(before[victim.relative_to(out)]) // 2])
    result = _evaluate(tiny_pipe, tiny_model_dir, bench, out, [BaseMethod()])
    assert result["generation"]["images_generated_this_run"] == 1 and _pngs(out) == before


def test_other_settings_are_refused(tiny_pipe, tiny_model_dir, bench, tmp_path):
    out = tmp_path / "out"
    _evaluate(tiny_pipe, tiny_model_dir, bench, out, [BaseMethod()])
    other = EvalSettings(num_images=2, seed=0, steps=2, guidance_scale=2.0, batch_size=2)
    with pytest.raises(DataError, match="different steps"):
        _evaluate(tiny_pipe, tiny_model_dir, bench, out, [BaseMethod()], settings=other)


def _nothing_done(out, loads):
    assert not out.exists() and loads == []


def test_corrupt_second_rectifier_is_refused_before_any_work(tiny_pipe, tiny_model_dir, tmp_path):
    bench = tmp_path / "bench"
    write_relation(bench)
    second = write_relation(tmp_path / "b2")
    second.rename(bench / "zz_above")
    rects = _rectifiers(tiny_pipe, bench, tmp_path / "rect", seed=1)
    (rects / "zz_above" / "rectifier.safetensors").write_bytes(b"not safetensors at all")
    out, loads = tmp_path / "out", []
    with pytest.raises(CheckpointError, match="zz_above"):
        _evaluate(tiny_pipe, tiny_model_dir, bench, out, [BaseMethod(), RectifierMethod(rects, (1.0,))], loads=loads)
    _nothing_done(out, loads)


def test_judge_vocabulary_is_checked_before_any_work(tiny_pipe, tiny_model_dir, bench, tmp_path):
    def refuse(query):
        raise DataError(f"this judge does not know {query.object_a!r}")

    out, loads = tmp_path / "out", []
    with pytest.raises(DataError, match="does not know"):
        _evaluate(tiny_pipe, tiny_model_dir, bench, out, [BaseMethod()], judge=JudgeFactory(FirstPixelJudge, refuse),
                  loads=loads)
    _nothing_done(out, loads)


def test_overlong_prompt_is_refused_before_any_work(tiny_pipe, tiny_model_dir, bench, tmp_path):
    index = bench / "above" / "index.json"
    data = json.loads(index.read_text())
    data["ARB"] += " in a very big room" * 20
    index.write_text(json.dumps(data))
    out, loads = tmp_path / "out", []
    with pytest.raises(PromptError, match="at most 77"):
        _evaluate(tiny_pipe, tiny_model_dir, bench, out, [BaseMethod()], loads=loads)
    _nothing_done(out, loads)


# ---------------------------------------------------------------------------------------------
# The command line, killed
# ---------------------------------------------------------------------------------------------


def _world_bench(root):
    """A relation in the mini world's words, so the exact judge can judge the tiny model's images."""
    from rrnet.world.vocab import object_names

    a, b = object_names()[:2]
    folder = root / "rel"
    for name in ("arb", "bra", a, b):
        (folder / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), (90, 90, 90)).save(folder / name / "0.png")
    (folder / "index.json").write_text(json.dumps({"A": a, "R": "above", "B": b, "ARB": f"a {a} above a {b}",
                                                   "BRA": f"a {b} above a {a}", "ARB_dir": "arb", "BRA_dir": "bra"}))
    return root


def _evaluate_args(model, bench, out, num_images=3):
    return [str(a) for a in ["evaluate", "--model", model, "--benchmark", bench, "--num_images", num_images,
                             "--steps", 1, "--guidance_scale", 2, "--batch_size", 1, "--judge", "exact",
                             "--output_dir", out, "--no_progress"]]


@pytest.fixture(scope="module")
def killed_bench(tiny_model_dir, tmp_path_factory):
    """A mini-world benchmark and the reference: the evaluation never killed."""
    root = tmp_path_factory.mktemp("killed")
    bench = _world_bench(root / "bench")
    reference = root / "ref"
    assert main(_evaluate_args(tiny_model_dir, bench, reference)) == 0
    return tiny_model_dir, bench, reference


def _same_as_reference(out, reference):
    ref, got = (json.loads((d / "results.json").read_text()) for d in (reference, out))
    assert [r["judged"] for r in got["rows"]] == [r["judged"] for r in ref["rows"]]
    assert _pngs(out) == _pngs(reference)


@pytest.mark.parametrize(("when", "pattern"), [
    ("after", r"^001\.png$"),        # mid generation
    ("before", r"^judgement-"),      # images done, first verdicts not yet written
    ("before", r"^results\.json$"),  # everything judged, the report not yet written
], ids=["mid-generation", "mid-judging", "before-report"])
def test_evaluate_killed_then_rerun_matches(killed_bench, tmp_path, capsys, when, pattern):
    model, bench, reference = killed_bench
    out = tmp_path / "out"
    killed = run_killed(when, pattern, *_evaluate_args(model, bench, out))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "results.json").exists() and not (out / "table.md").exists()
    assert all(p.stat().st_size > 0 for p in out.rglob("*.png"))  # every image on disk is whole
    assert main(_evaluate_args(model, bench, out)) == 0
    capsys.readouterr()
    _same_as_reference(out, reference)
    assert not [p for p in out.rglob(".*")]  # the killed run's temporaries are gone


def test_a_killed_rerun_never_leaves_the_previous_report(killed_bench, tmp_path, capsys):
    """A finished folder re-run for more images and killed mid-generation: the old results.json
    (counts of the old images) must not survive beside the new images."""
    model, bench, reference = killed_bench
    out = tmp_path / "out"
    assert main(_evaluate_args(model, bench, out, num_images=2)) == 0
    assert (out / "results.json").is_file()
    killed = run_killed("after", r"^002\.png$", *_evaluate_args(model, bench, out))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "results.json").exists() and not (out / "table.md").exists()
    assert main(_evaluate_args(model, bench, out)) == 0
    capsys.readouterr()
    _same_as_reference(out, reference)


def test_a_refused_rerun_keeps_the_previous_report(killed_bench, tmp_path, capsys):
    model, bench, _ = killed_bench
    out = tmp_path / "out"
    assert main(_evaluate_args(model, bench, out, num_images=1)) == 0
    before = (out / "results.json").read_bytes()
    argv = _evaluate_args(model, bench, out, num_images=1)
    argv[argv.index("--steps") + 1] = "2"
    assert main(argv) == 2
    assert "different steps" in capsys.readouterr().err
    assert (out / "results.json").read_bytes() == before


def test_a_busy_output_folder_is_refused(tiny_model_dir, tmp_path, capsys):
    from test_locking import _holder

    bench = _world_bench(tmp_path / "bench")
    out = tmp_path / "out"
    argv = ["evaluate", "--model", str(tiny_model_dir), "--benchmark", str(bench), "--num_images", "1", "--steps", "1",
            "--output_dir", str(out), "--no_progress"]
    child = _holder(out)  # another run holds the folder
    try:
        assert main(argv) == 2
    finally:
        child.kill()
        child.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use by another rrnet run" in err[0] and not out.exists()
