"""Benchmark scripts stay runnable: each runs once, tiny, on the CPU (no timing is checked)."""

import sys

import pytest


def _run(module, argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [module.__file__, *argv])
    module.main()
    return capsys.readouterr().out


def test_gpu_train_runs_on_cpu_with_the_tiny_shape(monkeypatch, capsys, tmp_path):
    import json

    from benchmarks import gpu_train

    out = _run(gpu_train, ["--device", "cpu", "--tiny", "--steps", "1", "--variants", "fast-fp32", "fast-bf16-ckpt",
                           "--json", str(tmp_path / "rows.json")], monkeypatch, capsys)
    assert "| reference |" in out and "| fast-fp32 |" in out and "| fast-bf16-ckpt |" in out
    assert "projected official run s (500 steps)" in out and "projected fast run s (100 steps)" in out
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["reference", "fast-fp32", "fast-bf16-ckpt"]
    assert set(rows[0]["projected_s"]) == {"official"} and set(rows[1]["projected_s"]) == {"official", "fast"}
    fast = rows[1]  # measured, not a formula checked against itself: a time is positive, a median above the minimum
    assert 0 < fast["s_per_pair_step_min"] <= fast["s_per_pair_step"]
    assert fast["setup_and_warmup_s"] < fast["projected_s"]["fast"] < fast["projected_s"]["official"]


def test_gpu_train_refuses_cuda_without_a_gpu(monkeypatch, capsys):
    from benchmarks import gpu_train

    monkeypatch.setattr(gpu_train.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device"):
        _run(gpu_train, ["--steps", "1"], monkeypatch, capsys)


def test_generate_overhead_runs(monkeypatch, capsys):
    from benchmarks import generate_overhead

    out = _run(generate_overhead, ["--backbones", "tiny", "--reps", "1", "--steps", "2", "--threads", "1"], monkeypatch, capsys)
    assert "| tiny |" in out


@pytest.mark.parametrize("method", ["reference", "fast"])
def test_train_speed_worker_runs(monkeypatch, capsys, method):
    from benchmarks import train_speed

    out = _run(train_speed, ["--worker", "--backbone", "tiny", "--method", method, "--epochs", "1", "--reps", "1",
                             "--threads", "1"], monkeypatch, capsys)
    assert '"steps_per_s"' in out



def test_step_breakdown_runs(monkeypatch, capsys):
    from benchmarks import step_breakdown

    out = _run(step_breakdown, ["--backbones", "tiny", "--reps", "1", "--threads", "1"], monkeypatch, capsys)
    assert "| tiny | reference: whole pair step |" in out and "| tiny | fast: whole pair step, fp32 |" in out
    assert "tiny: no fp32 pair step can beat its UNet call" in out and "tiny: no bf16 pair step" in out


def test_step_cost_counts_less_work_for_the_fast_path(monkeypatch, capsys):
    from benchmarks import step_cost

    reference, fast = step_cost.step_tflop("tiny", "reference"), step_cost.step_tflop("tiny", "fast")
    assert 0 < fast < reference  # the same UNet work, without the reference's VAE encodes
    out = _run(step_cost, ["--shape", "tiny", "--memory", "--variants", "fast-bf16", "--threads", "1"], monkeypatch, capsys)
    assert "| fast |" in out and "| fast-bf16 |" in out


def test_multi_relation_groups_split_captions_by_where_their_pairs_come_from():
    from benchmarks.multi_relation import arrangements, best_alphas, caption_groups
    from rrnet.world.record import load_recipe, shipped_backbone

    recipe = load_recipe(shipped_backbone())
    groups = caption_groups(recipe)
    train = [{a, b} for a, b, _ in recipe.train_pairs]
    heldout = [{a, b} for a, b, _ in recipe.heldout_pairs]
    control = [{a, b} for a, b, _ in recipe.control_pairs]
    assert all(all({t[0], t[2]} in train for t in scene) for scene in groups["collapsed-train"])
    assert all(any({t[0], t[2]} in heldout for t in scene) for scene in groups["collapsed-heldout"])
    assert all(all({t[0], t[2]} in control for t in scene) for scene in groups["control"])
    scene = groups["control"][0]
    four = arrangements(scene)
    assert len({tuple(s) for s in four}) == 4 and four[0] == scene
    assert four[3][0] == (scene[0][2], scene[0][1], scene[0][0]) and four[3][1] == (scene[1][2], scene[1][1], scene[1][0])
    summary = [{"group": "collapsed-train", "variant": "joint", "alpha": a, "all_correct": {"rate": r}}
               for a, r in ((0.8, 0.4), (1.2, 0.6))]
    summary.append({"group": "control", "variant": "joint", "alpha": 0.8, "all_correct": {"rate": 0.99}})
    assert best_alphas(summary, ["base", "joint"]) == {"base": None, "joint": 1.2}


def test_generalist_merge_pools_side_by_side_runs_and_refuses_other_settings(tmp_path, capsys):
    import json

    from benchmarks.generalist import merge_results

    def rate(k, n=100):
        return {"successes": k, "n": n, "rate": k / n, "low": 0.0, "high": 1.0}

    def row(variant, alpha, prompt, k):
        return {"split": "heldout", "variant": variant, "alpha": alpha, "prompt": prompt,
                "relation": rate(k), "objects": rate(90)}

    settings = {"samples": 100, "epochs": 60}
    first = {"settings": settings, "machine": "m", "date": "2026-12-06", "training": {"direction": {"loss": 1}},
             "eot_cosine": [{"split": "heldout", "variant": "direction", "mean": 0.9}],
             "rows": [row("base", None, "a x above a y", 40), row("direction", 0.8, "a x above a y", 60)]}
    second = {"settings": settings, "machine": "m", "date": "2026-12-07", "training": {"direction+floor": {"loss": 2}},
              "eot_cosine": [{"split": "heldout", "variant": "direction+floor", "mean": 0.8}],
              "rows": [row("direction+floor", 0.8, "a x above a y", 80)]}
    paths = []
    for name, data in (("a.json", first), ("b.json", second)):
        (tmp_path / name).write_text(json.dumps(data))
        paths.append(tmp_path / name)
    out = tmp_path / "merged.json"
    merge_results(paths, out)
    merged = json.loads(out.read_text())
    assert sorted(r["variant"] for r in merged["rows"]) == ["base", "direction", "direction+floor"]
    assert set(merged["training"]) == {"direction", "direction+floor"} and merged["date"] == "2026-12-07"
    assert {e["variant"] for e in merged["eot_cosine"]} == {"direction", "direction+floor"}
    pooled = {(s["variant"], s["alpha"]): s["relation"]["rate"] for s in merged["summary"]}
    assert pooled[("direction+floor", 0.8)] == 0.8 and pooled[("base", None)] == 0.4
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**second, "settings": {"samples": 50, "epochs": 60}}))
    with pytest.raises(SystemExit, match="other settings"):
        merge_results([other], out)
