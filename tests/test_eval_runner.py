"""The benchmark runner on the mini world: generation with recorded seeds, exact judging, resume, reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rrnet.cli import main
from rrnet.data import find_relations
from rrnet.errors import DataError, RRNetError
from rrnet.eval.judges.base import JudgeQuery, JudgeResult
from rrnet.eval.judges.exact import ExactJudge
from rrnet.eval.methods import BaseMethod, RectifierMethod
from rrnet.eval.metrics import Tally, infer_category
from rrnet.eval.report import cell
from rrnet.eval.runner import EvalSettings, FIDOptions, _runs, evaluate
from rrnet.world.record import shipped_backbone
from rrnet.world.exemplars import write_relation_folder
from rrnet.world.judge import judge_image

SETTINGS = EvalSettings(num_images=3, seed=5, steps=2, guidance_scale=4.0, batch_size=2)
RELATIONS = [("red circle", "above", "blue square"), ("green triangle", "left of", "yellow diamond")]


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    for a, rel, b in RELATIONS:
        write_relation_folder(root, a, rel, b, n_images=2, size=32, seed=1)
    return root


@pytest.fixture(scope="module")
def rectifiers(tmp_path_factory, world_pipe, benchmark) -> Path:
    from rrnet.train import TrainConfig, new_rectifier

    root = tmp_path_factory.mktemp("rectifiers")
    for k, spec in enumerate(find_relations(benchmark)):
        torch.manual_seed(k)
        rect = new_rectifier(world_pipe, TrainConfig(hidden=16, heads=1), spec)
        with torch.no_grad():  # a fresh rectifier's output layer may start at zero: make alpha visible
            for p in rect.parameters():
                p.add_(0.5 * torch.randn_like(p))
        rect.save_pretrained(root / spec.name)
    return root


class CountingJudge(ExactJudge):
    """The exact judge, counting how many images it was asked about."""

    def __init__(self) -> None:
        self.calls = 0

    def judge(self, images, query):
        self.calls += len(images)
        return super().judge(images, query)


class Loader:
    def __init__(self, pipe) -> None:
        self.pipe, self.calls = pipe, 0

    def __call__(self):
        self.calls += 1
        return self.pipe


def _run(tmp: Path, pipe, benchmark: Path, methods, judge, settings=SETTINGS, fid=None, dataset=False):
    loader = Loader(pipe)
    results = evaluate(loader, "mini", find_relations(benchmark), methods, [judge], tmp, settings, fid=fid,
                       benchmark=str(benchmark), progress=False, include_dataset=dataset)
    return results, loader


def test_runs_judges_reports_and_resumes(tmp_path, world_pipe, benchmark, rectifiers):
    from rrnet.generate import GenerationSettings, sample_images

    methods = [BaseMethod(), RectifierMethod(rectifiers, (0.5, 1.0))]
    judge = CountingJudge()
    results, loader = _run(tmp_path, world_pipe, benchmark, methods, judge)
    n_rows, per_row = 3, len(RELATIONS) * 2 * SETTINGS.num_images
    assert loader.calls == 1 and judge.calls == n_rows * per_row
    assert [r["label"] for r in results["rows"]] == ["base", "rrnet (alpha=0.5)", "rrnet (alpha=1)"]
    assert results["generation"]["seeds"] == [5, 6, 7]
    assert results["generation"]["images_generated_this_run"] == n_rows * per_row

    # image k is exactly the pipeline's sample with seed + k
    folder = tmp_path / "images" / "base" / "base" / "red_circle_above_blue_square" / "0_a_red_circle_above_a_blue_square"
    record = json.loads((folder / "generation.json").read_text())
    assert record["seeds"] == {"000.png": 5, "001.png": 6, "002.png": 7}
    from rrnet.generate import prompt_embeddings

    embeds = prompt_embeddings(world_pipe, "a red circle above a blue square", None, None)
    again = sample_images(world_pipe, embeds, GenerationSettings(num_images=1, seed=6, steps=2, guidance_scale=4.0))[0]
    assert np.array_equal(np.asarray(again), np.asarray(Image.open(folder / "001.png")))

    # the counts equal a direct exact judgement of the files, both prompts (the swap judged with A, B swapped)
    relation = results["rows"][0]["judged"]["exact"]["relations"]["red_circle_above_blue_square"]
    direct = Tally()
    for side, (a, b) in enumerate([("red circle", "blue square"), ("blue square", "red circle")]):
        sub = next(p for p in folder.parent.iterdir() if p.name.startswith(f"{side}_"))
        for path in sorted(sub.glob("*.png")):
            j = judge_image(Image.open(path), a, "above", b)
            direct.add(JudgeResult(j.has_a, j.has_b, j.has_a and j.has_b, j.verdict))
    assert relation == direct.summary()
    position = results["rows"][0]["judged"]["exact"]["categories"]["position"]
    assert position["n"] == per_row and "action" not in results["rows"][0]["judged"]["exact"]["categories"]

    # reports agree with results.json
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    table = (tmp_path / "table.md").read_text()
    for row in on_disk["rows"]:
        line = next(x for x in table.splitlines() if x.startswith(f"| {row['label']} |"))
        stats = row["judged"]["exact"]
        assert cell(stats["categories"]["position"], "relation_accuracy") in line
        assert cell(stats["overall"], "oga") in line
    assert (tmp_path / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # resume: nothing regenerated, nothing re-judged, same numbers
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.png") if "images" in p.parts}
    judge2 = CountingJudge()
    results2, loader2 = _run(tmp_path, world_pipe, benchmark, methods, judge2)
    assert loader2.calls == 0 and judge2.calls == 0
    assert results2["generation"]["images_generated_this_run"] == 0
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert [r["judged"] for r in results2["rows"]] == [r["judged"] for r in results["rows"]]

    # more images: only the new ones are made and judged
    more = EvalSettings(num_images=4, seed=5, steps=2, guidance_scale=4.0, batch_size=2)
    judge3 = CountingJudge()
    results3, loader3 = _run(tmp_path, world_pipe, benchmark, methods, judge3, more)
    assert loader3.calls == 1 and results3["generation"]["images_generated_this_run"] == n_rows * len(RELATIONS) * 2
    assert judge3.calls == n_rows * len(RELATIONS) * 2
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    # a changed image is re-judged
    victim = folder / "000.png"
    Image.new("RGB", (32, 32), (255, 255, 255)).save(victim)
    judge4 = CountingJudge()
    _run(tmp_path, world_pipe, benchmark, methods, judge4, more)
    assert judge4.calls == 1


def test_refuses_to_mix_settings(tmp_path, world_pipe, benchmark):
    _run(tmp_path, world_pipe, benchmark, [BaseMethod()], ExactJudge(), EvalSettings(num_images=1, steps=2, guidance_scale=4.0))
    with pytest.raises(DataError, match="different steps"):
        _run(tmp_path, world_pipe, benchmark, [BaseMethod()], ExactJudge(), EvalSettings(num_images=1, steps=3, guidance_scale=4.0))


def test_fid_in_report(tmp_path, world_pipe, benchmark):
    class MeanColour:
        name = "mean-colour-test"

        def __call__(self, images):
            return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1)

    reference = benchmark / "red_circle_above_blue_square" / "a red circle above a blue square"
    fid = FIDOptions(reference=reference, extractor=MeanColour(), weights="test features")
    results, _ = _run(tmp_path, world_pipe, benchmark, [BaseMethod()], ExactJudge(),
                      EvalSettings(num_images=2, steps=2, guidance_scale=4.0), fid=fid)
    value = results["rows"][0]["fid"]
    assert value is not None and np.isfinite(value) and value >= 0
    assert results["fid"]["weights"] == "test features"
    assert (tmp_path / "fid_reference.npz").is_file() and (tmp_path / "fid" / "base-base.npz").is_file()

    class Refusing(MeanColour):
        def __call__(self, images):
            raise AssertionError("cached statistics should have been reused")

    again, _ = _run(tmp_path, world_pipe, benchmark, [BaseMethod()], ExactJudge(),
                    EvalSettings(num_images=2, steps=2, guidance_scale=4.0),
                    fid=FIDOptions(reference=reference, extractor=Refusing(), weights="test features"))
    assert again["rows"][0]["fid"] == value
    assert re.search(r"\| base \|.*\| " + re.escape(f"{value:.2f}") + r" \|", (tmp_path / "table.md").read_text())
    assert "test features" in (tmp_path / "table.md").read_text()


def test_unreadable_verdicts_count_as_wrong_and_are_reported():
    counts = Tally()
    for verdict in ("ARB", None, "BRA", "neither"):
        counts.add(JudgeResult(True, True, True, verdict))
    s = counts.summary()
    assert s["n"] == 4 and s["unreadable"] == 1 and s["relation_accuracy"] == 0.25
    low, high = s["relation_accuracy_ci"]
    assert 0 < low < 0.25 < high < 1


def test_category_inference_and_runs():
    assert infer_category("above") == "position" and infer_category("placed") == "position"
    assert infer_category("left of") == "position" and infer_category("contains") == "action"
    assert infer_category("is riding") == "action"
    assert _runs([0, 1, 2, 5, 7, 8]) == [(0, 3), (5, 1), (7, 2)]


def test_exact_judge_refuses_foreign_words():
    with pytest.raises(DataError, match="mini-world objects"):
        ExactJudge().judge([Image.new("RGB", (8, 8))], JudgeQuery("book", "above", "bowl", "a book above a bowl", "a bowl above a book"))


def test_judge_result_rejects_bad_verdict():
    with pytest.raises(RRNetError):
        JudgeResult(True, True, True, "sideways")


def test_cli_evaluate(tmp_path, benchmark, capsys):
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(shipped_backbone()), "--benchmark", str(benchmark), "--judge", "exact",
            "--num_images", "1", "--steps", "2", "--guidance_scale", "4", "--relations", "red_circle_above_blue_square",
            "--output_dir", str(out), "--no_progress"]
    assert main(args) == 0
    assert "Position(exact)" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["rows"][0]["images"] == 2
    assert main([*args[:-3], "--judge", "vlm", "--output_dir", str(out)]) == 2
    assert "--judge_model" in capsys.readouterr().err
    assert main([*args[:-3], "--relations", "nope", "--output_dir", str(out)]) == 2
    assert main([*args[:-3], "--no_base", "--output_dir", str(out)]) == 2
    assert main([*args[:-3], "--baseline", "lora", "--output_dir", str(out)]) == 2


def test_dataset_row_and_transfer(tmp_path, world_pipe, benchmark, rectifiers):
    from rrnet.eval.methods import TransferMethod

    source = rectifiers / "red_circle_above_blue_square"
    transfer = TransferMethod(source, (1.0,))
    judge = CountingJudge()
    results, _ = _run(tmp_path, world_pipe, benchmark, [transfer], judge,
                      EvalSettings(num_images=2, steps=2, guidance_scale=4.0), dataset=True)
    dataset, row = results["rows"]
    assert dataset["label"] == "dataset" and dataset["images"] == len(RELATIONS) * 2 * 2  # 2 exemplars per folder
    assert dataset["judged"]["exact"]["overall"]["relation_accuracy"] == 1.0  # rendered scenes are right by construction
    assert not any((benchmark / "red_circle_above_blue_square").rglob("judgement-*"))  # nothing written into the data
    assert row["label"] == "rrnet_transfer (alpha=1)" and row["images"] == len(RELATIONS) * 2 * 2
    assert results["methods"][0]["trained_on"] == [["red circle", "above", "blue square"]]
    # the transferred rectifier edits the unseen relation's prompts with that relation's own words
    spec = find_relations(benchmark)[1]
    with transfer.applied(world_pipe, spec) as condition:
        edited = condition(spec.prompt, 1.0)
        plain = condition(spec.prompt, 0.0)
    assert not torch.equal(edited, plain)


def test_one_generalist_rectifier_for_every_relation(tmp_path, world_pipe, benchmark):
    from rrnet.errors import CheckpointError
    from rrnet.eval.methods import GeneralistMethod
    from rrnet.train import TrainConfig, new_rectifier

    specs = find_relations(benchmark)
    rect = new_rectifier(world_pipe, TrainConfig(hidden=16, heads=1), specs)
    with torch.no_grad():
        for p in rect.parameters():
            p.add_(0.5 * torch.randn_like(p, generator=None))
    rect.save_pretrained(tmp_path / "generalist")
    method = GeneralistMethod(tmp_path / "generalist", (1.0,))
    results, _ = _run(tmp_path / "run", world_pipe, benchmark, [method], CountingJudge(),
                      EvalSettings(num_images=2, steps=2, guidance_scale=4.0))
    row, = results["rows"]
    assert row["label"] == "rrnet_generalist (alpha=1)" and row["images"] == len(RELATIONS) * 2 * 2
    for spec in specs:  # each prompt is rectified with the triplet it states, read by the parser
        with method.applied(world_pipe, spec) as condition:
            edited = condition(spec.swapped_prompt, 1.0)
        t = (spec.object_b, spec.relation, spec.object_a)
        assert torch.equal(edited, rect.prompt_embeds(world_pipe, spec.swapped_prompt, alpha=1.0, triplet=t))
    one = new_rectifier(world_pipe, TrainConfig(hidden=16, heads=1), specs[:1])
    one.save_pretrained(tmp_path / "one")
    with pytest.raises(CheckpointError, match="finds no relation it knows"):
        GeneralistMethod(tmp_path / "one", (1.0,)).check(specs[1])


def test_each_prompt_has_its_own_row(tmp_path, world_pipe, benchmark, rectifiers):
    from rrnet.eval.methods import RectifierMethod

    results, _ = _run(tmp_path, world_pipe, benchmark, [RectifierMethod(rectifiers, (1.0,))], CountingJudge(),
                      EvalSettings(num_images=2, steps=2, guidance_scale=4.0))
    row, = results["rows"]
    judged = next(iter(row["judged"].values()))
    for relation in results["relations"]:
        both = [judged["prompts"][relation[key]] for key in ("prompt", "swapped_prompt")]
        assert all(p["n"] == 2 for p in both)
        pooled = judged["relations"][relation["name"]]
        assert sum(p["relation_accuracy"] for p in both) / 2 == pytest.approx(pooled["relation_accuracy"])
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert any(line.startswith("Relation accuracy per relation (both prompts pooled) and per prompt") for line in lines)
    for relation in results["relations"]:  # the pooled row, then one row per direction right beneath it
        at = lines.index(next(line for line in lines if line.startswith(f"| **{relation['name']}** |")))
        pooled, *directions = (line.strip("|").split("|") for line in lines[at:at + 3])
        assert [d[0].strip() for d in directions] == [f"↳ {relation['prompt']}", f"↳ {relation['swapped_prompt']}"]
        stats = judged["prompts"]
        cells = [float(d[-1]) for d in directions]
        assert cells == [round(100 * stats[relation[k]]["relation_accuracy"], 1) for k in ("prompt", "swapped_prompt")]
        assert float(pooled[-1]) == round(100 * judged["relations"][relation["name"]]["relation_accuracy"], 1)


def test_alpha_zero_judges_the_base_images(tmp_path, world_pipe, benchmark, rectifiers):
    from rrnet.eval.methods import BaseMethod, RectifierMethod

    loader = Loader(world_pipe)
    settings = EvalSettings(num_images=2, steps=2, guidance_scale=4.0)
    results = evaluate(loader, "mini", find_relations(benchmark), [BaseMethod(), RectifierMethod(rectifiers, (0.0, 1.0))],
                       [CountingJudge()], tmp_path, settings, progress=False)
    base, zero, one = results["rows"]
    assert zero["reuses_images_of"] == "base" and zero["folder"] == base["folder"] and one["reuses_images_of"] is None
    assert results["generation"]["images_generated_this_run"] == 2 * len(RELATIONS) * 2 * 2  # base and alpha 1 only
    from rrnet.eval.methods import setting_label

    assert [p.name for p in (tmp_path / "images" / "rrnet").iterdir()] == [setting_label(1.0)]
    assert zero["judged"] == base["judged"]
