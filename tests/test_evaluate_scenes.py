"""`rrnet evaluate` on scene benchmarks (prompts stating several relations), on the shipped mini world:
end to end from the command line, counts equal to a direct exact judgement of the saved images,
rendered truth through the metric code, relations and scenes mixed, and refusals in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rrnet.cli import main
from rrnet.data import find_relations
from rrnet.data.scenes import SceneSpec
from rrnet.errors import CheckpointError, RRNetError
from rrnet.eval.judges.base import SceneQuery
from rrnet.eval.judges.exact import ExactJudge
from rrnet.eval.methods import BaseMethod, GeneralistMethod, RectifierMethod, TransferMethod
from rrnet.eval.metrics import SceneTally, scene_relation_counts, scene_tally
from rrnet.eval.runner import EvalSettings, PromptJob, Row, evaluate, judge_rows, summarize_scenes
from rrnet.generate import prompt_folder
from rrnet.world.exemplars import write_relation_folder, write_scene_folder
from rrnet.world.judge import judge_relations
from rrnet.world.record import shipped_backbone
from rrnet.world.render import render_relations, to_pil
from rrnet.world.vocab import swap_clause

torch.set_num_threads(1)

SCENE = (("red circle", "above", "blue square"), ("green triangle", "left of", "blue square"))
RELATION = ("red circle", "above", "blue square")
SETTINGS = EvalSettings(num_images=2, seed=3, steps=2, guidance_scale=3.0, batch_size=2)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """One relation folder and one scene folder (two exemplars per sub-folder)."""
    root = tmp_path_factory.mktemp("mixed")
    write_relation_folder(root, *RELATION, n_images=2, seed=1)
    write_scene_folder(root, SCENE, n_images=2, seed=2)
    return root


def _perturbed(rect):
    """A fresh rectifier's output may start at zero: make alpha visible."""
    with torch.no_grad():
        for p in rect.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return rect


def _direct(paths, relations) -> SceneTally:
    """Count the saved image files with the world's exact judge, outside the evaluation code."""
    out = SceneTally()
    for path in paths:
        j = judge_relations(np.asarray(Image.open(path).convert("RGB")), relations)
        out.n += 1
        out.all_correct += j.all_correct
        out.objects += j.objects_found
        out.relation_verdicts += len(j.outcomes)
        out.relations_correct += sum(o == "correct" for o in j.outcomes)
        out.swapped += sum(o == "swapped" for o in j.outcomes)
        out.neither += sum(o == "neither" for o in j.outcomes)
        out.missing += sum(o == "missing" for o in j.outcomes)
    return out


def test_scene_benchmark_end_to_end_from_the_command_line(tmp_path, world_pipe, capsys):
    from rrnet.train import TrainConfig, new_rectifier

    bench, out = tmp_path / "bench", tmp_path / "eval"
    assert main(["world", "benchmark", "--output_dir", str(bench), "--pair", "red circle", "blue square", "y",
                 "--pair", "green triangle", "blue square", "x", "--relations", "above", "left of",
                 "--scenes", "only", "--num_images", "1"]) == 0
    specs = find_relations(bench, scenes=True)
    assert len(specs) == 1 and isinstance(specs[0], SceneSpec) and specs[0].relations == SCENE
    assert main(["world", "benchmark", "--output_dir", str(tmp_path / "both"), "--pair", "red circle", "blue square", "y",
                 "--pair", "green triangle", "blue square", "x", "--relations", "above", "left of", "--scenes",
                 "--num_images", "1"]) == 0
    assert sorted(type(s).__name__ for s in find_relations(tmp_path / "both", scenes=True)) == [
        "RelationSpec", "RelationSpec", "SceneSpec"]
    torch.manual_seed(0)
    _perturbed(new_rectifier(world_pipe, TrainConfig(hidden=16, heads=1), specs)).save_pretrained(tmp_path / "generalist")
    capsys.readouterr()
    args = ["evaluate", "--model", str(shipped_backbone()), "--benchmark", str(bench), "--judge", "exact",
            "--rectifier", str(tmp_path / "generalist"), "--alpha", "0", "1", "--num_images", "2", "--seed", "3",
            "--batch_size", "2", "--output_dir", str(out), "--no_progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "All correct(exact)" in printed and "Position(exact)" not in printed
    results = json.loads((out / "results.json").read_text())
    assert results["relations"] == [] and [s["name"] for s in results["scenes"]] == [specs[0].name]
    base, zero, one = results["rows"]
    assert [r["label"] for r in results["rows"]] == ["base", "rrnet_generalist (alpha=0)", "rrnet_generalist (alpha=1)"]
    assert zero["reuses_images_of"] == "base" and zero["judged"] == base["judged"]
    prompts = [p for p, _ in specs[0].prompt_relations()]
    assert results["generation"]["images_generated_this_run"] == 2 * len(prompts) * 2  # base and alpha 1

    # every count equals a direct exact judgement of the saved files, per prompt and pooled
    for row in (base, one):
        scenes = row["judged"]["exact"]["scenes"]
        pooled = SceneTally()
        for entry, (prompt, relations) in zip(scenes["prompts"], specs[0].prompt_relations(), strict=True):
            assert entry["prompt"] == prompt and entry["relations"] == [list(t) for t in relations]
            folder = out / row["folder"] / specs[0].name / prompt_folder(entry["side"], prompt)
            record = json.loads((folder / "generation.json").read_text())
            assert record["prompt"] == prompt and record["seeds"] == {"000.png": 3, "001.png": 4}
            direct = _direct(sorted(folder.glob("*.png")), relations)
            assert {k: entry[k] for k in direct.summary()} == direct.summary()
            for k, counts in enumerate(entry["per_relation"]):
                assert counts["correct"] == sum(judge_relations(np.asarray(Image.open(p).convert("RGB")), relations)
                                                .outcomes[k] == "correct" for p in sorted(folder.glob("*.png")))
            pooled += direct
        assert scenes["overall"] == pooled.summary() == scenes["scenes"][specs[0].name]
        assert pooled.relations_correct + pooled.swapped + pooled.neither > 0  # real verdicts, not only "missing"
        if row is base:  # the base model draws all three objects (the perturbed rectifier at alpha 1 may not)
            assert pooled.objects > 0
    table = (out / "table.md").read_text()
    assert "All relations correct per scene" in table and specs[0].swapped_prompts[1] in table

    # the rectified row used the joint graph of each prompt (it differs from the base images)
    first = out / one["folder"] / specs[0].name
    assert any(not np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(out / base["folder"] / specs[0].name /
                                                                                   p.relative_to(first))))
               for p in first.rglob("*.png"))

    # a rerun generates and judges nothing again
    verdict_files = {p: p.stat().st_mtime_ns for p in out.rglob("judgement-*.json")}
    assert len(verdict_files) == 2 * len(prompts)
    assert main(args) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["generation"]["images_generated_this_run"] == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("judgement-*.json")} == verdict_files
    assert [r["judged"] for r in again["rows"]] == [r["judged"] for r in results["rows"]]


def test_rendered_truth_through_the_metric_code(tmp_path):
    """Rendered scenes are right by construction: correct ones count as all-correct, and a scene
    drawn with one relation swapped counts that relation as swapped and the other as correct."""
    rng = np.random.default_rng(0)
    right = [to_pil(render_relations(SCENE, rng)[0]) for _ in range(6)]
    swapped = [to_pil(render_relations(swap_clause(SCENE, 0), rng)[0]) for _ in range(6)]
    judge, query = ExactJudge(), SceneQuery(SCENE, "a red circle above a blue square and a green triangle left of the blue square")
    good, bad = judge.judge_scene(right, query), judge.judge_scene(swapped, query)
    counts = scene_tally(good)
    assert (counts.n, counts.all_correct, counts.objects, counts.relation_verdicts, counts.relations_correct) == (6, 6, 6, 12, 12)
    counts = scene_tally(bad)
    assert (counts.all_correct, counts.relations_correct, counts.swapped, counts.objects) == (0, 6, 6, 6)
    assert counts.summary()["relation_accuracy"] == 0.5 and counts.summary()["all_correct_rate"] == 0.0
    per = scene_relation_counts(SCENE, bad)
    assert (per[0]["swapped"], per[0]["correct"], per[1]["correct"]) == (6, 0, 6)

    # the same images through the runner's judging and pooling, as the images of the scene's prompt
    spec = find_relations(_scene_bench(tmp_path), scenes=True)[0]
    paths = []
    for k, image in enumerate(right + swapped):
        paths.append(tmp_path / "imgs" / f"{k:03d}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        image.save(paths[-1])
    jobs = [PromptJob("truth", None, spec, 0, tmp_path / "judged" / "right", tuple(paths[:6])),
            PromptJob("truth", None, spec, 0, tmp_path / "judged" / "swapped", tuple(paths[6:]))]
    verdicts: dict = {}
    judge_rows(judge, [Row("truth", None, jobs)], EvalSettings(num_images=6), progress=False, scenes=verdicts)
    summary = summarize_scenes(verdicts["truth"])
    first, second = summary["prompts"]
    assert (first["all_correct"], first["relations_correct"]) == (6, 12)
    assert (second["all_correct"], second["relations_correct"], second["swapped"]) == (0, 6, 6)
    assert [r["swapped"] for r in second["per_relation"]] == [6, 0]
    assert summary["overall"]["all_correct_rate"] == 0.5 and summary["overall"]["relation_accuracy"] == 0.75


def _scene_bench(tmp_path: Path) -> Path:
    root = tmp_path / "scene-bench"
    write_scene_folder(root, SCENE, n_images=2, seed=4)
    return root


def test_mixed_relations_and_scenes(tmp_path, world_pipe, mixed):
    """Relation rows keep their shape; scene rows are added; a rectifier per member serves both, and
    the exemplars themselves (the dataset row) are all correct."""
    from rrnet.train import TrainConfig, new_rectifier

    specs = find_relations(mixed, scenes=True)
    for k, spec in enumerate(specs):
        torch.manual_seed(k)
        _perturbed(new_rectifier(world_pipe, TrainConfig(hidden=16, heads=1), [spec])).save_pretrained(tmp_path / "rect" / spec.name)
    results = evaluate(lambda: world_pipe, "mini", specs, [BaseMethod(), RectifierMethod(tmp_path / "rect", (1.0,))],
                       [ExactJudge()], tmp_path / "out", SETTINGS, progress=False, include_dataset=True)
    assert [r["name"] for r in results["relations"]] == ["red_circle_above_blue_square"]
    assert len(results["scenes"]) == 1 and results["scenes"][0]["relations"] == [list(t) for t in SCENE]
    dataset, base, rect = results["rows"]
    assert [r["images"] for r in results["rows"]] == [(2 + 3) * 2] * 3  # 2 relation prompts + 3 scene prompts
    for row in results["rows"]:
        judged = row["judged"]["exact"]
        assert set(judged["relations"]) == {"red_circle_above_blue_square"}  # one-relation numbers: relations only
        assert judged["scenes"]["overall"]["n"] == 3 * 2 and len(judged["scenes"]["prompts"]) == 3
    truth = dataset["judged"]["exact"]
    assert truth["overall"]["relation_accuracy"] == 1.0
    assert truth["scenes"]["overall"]["all_correct_rate"] == 1.0 and truth["scenes"]["overall"]["relation_accuracy"] == 1.0
    table = (tmp_path / "out" / "table.md").read_text()
    assert "Position(exact)" in table and "All correct(exact)" in table and "1 relations and 1 scenes" in table

    # one-relation methods and a rectifier that cannot read the scene are refused before anything is written
    with pytest.raises(RRNetError, match="conditions on one relation"):
        evaluate(lambda: world_pipe, "mini", specs, [TransferMethod(tmp_path / "rect" / specs[0].name, (1.0,))],
                 [ExactJudge()], tmp_path / "refused", SETTINGS, progress=False)
    with pytest.raises(CheckpointError, match="reads 1 of the 2 relations"):
        GeneralistMethod(tmp_path / "rect" / specs[0].name, (1.0,)).check(specs[1])
    assert not (tmp_path / "refused" / "images").exists()


def test_unsupported_judges_and_methods_refuse_in_one_line(tmp_path, world_pipe, mixed, capsys):
    from rrnet.train import TrainConfig, new_rectifier

    spec = find_relations(mixed, scenes=True)[0]
    new_rectifier(world_pipe, TrainConfig(hidden=16, heads=1), [spec]).save_pretrained(tmp_path / "one")
    base = ["evaluate", "--model", str(shipped_backbone()), "--benchmark", str(mixed), "--num_images", "1",
            "--steps", "2", "--output_dir", str(tmp_path / "out"), "--no_progress"]
    for judge in (["--judge", "vlm", "--judge_model", "some/vlm"], ["--judge", "detector", "--judge_model", "some/owl"]):
        assert main([*base, *judge]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("rrnet: error:") and "\n" not in err and "--judge exact" in err
    for method in (["--transfer", str(tmp_path / "one")], ["--rectifier", str(tmp_path / "one")]):
        assert main([*base, "--no_base", *method]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("rrnet: error:") and "\n" not in err and ("one relation" in err or "reads 1 of the 2" in err)
    assert not (tmp_path / "out" / "images").exists()
    # the relation folder alone (--relations picks members by name) is evaluated as before
    assert main([*base, "--relations", "red_circle_above_blue_square"]) == 0
    assert json.loads((tmp_path / "out" / "results.json").read_text())["scenes"] == []


def test_a_rectifier_trained_with_scenes_reads_every_relation_of_every_scene_prompt():
    """Phrases learned from scene prompts stay inside their own clause, even when the shared object
    is named first in both clauses; otherwise the parser would read one relation spanning both."""
    from rrnet.prompt_parser import parse_relations, relation_phrases
    from rrnet.world.vocab import caption_for

    scene = (("cyan column", "above", "pink wedge"), ("cyan column", "left of", "yellow diamond"))
    arrangements = [scene, swap_clause(scene, 0), swap_clause(scene, 1)]
    phrases = relation_phrases([(t, [caption_for(s) for s in arrangements]) for t in scene])
    assert phrases == {"above": "above", "left of": "left of"}
    for relations in arrangements:
        assert parse_relations(caption_for(relations), phrases) == list(relations)
