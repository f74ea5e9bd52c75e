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


def test_multi_relation_gated_takes_the_row_whose_embeddings_it_equals(monkeypatch):
    import torch

    from benchmarks import multi_relation

    # embeddings by (rectifier, gate): the gate passes every relation of the first caption (joint's
    # embeddings), none of the second (base's), and a part of the third (neither)
    def fake_embeds(pipe, triplets, alpha, rectifier, gate=None):
        if rectifier is None:
            return torch.zeros(1, 3)
        caption = triplets[0]
        if gate is not None and caption == "partly gated":
            return torch.full((1, 3), 5.0)
        if gate is not None and caption == "ordered":
            return torch.zeros(1, 3)
        return torch.full((1, 3), float(alpha))

    monkeypatch.setattr(multi_relation, "caption_embeds", fake_embeds)
    rectifiers = {"joint": object()}
    rows = {("joint", 0.8, p): {"variant": "joint", "all_correct": 1} for p in ("c1", "c2", "c3")}
    rows.update({("base", None, p): {"variant": "base", "all_correct": 0} for p in ("c1", "c2", "c3")})
    def same(caption, prompt):
        gated = fake_embeds(None, [caption], 0.8, rectifiers["joint"], 0.99)
        return multi_relation.same_embeddings_row(None, [caption], 0.8, gated, rectifiers, rows, prompt)

    assert same("collapsed", "c1")["variant"] == "joint"
    assert same("ordered", "c2")["variant"] == "base"
    assert same("partly gated", "c3") is None  # must be sampled
    del rows[("joint", 0.8, "c1")]
    assert same("collapsed", "c1") is None  # nothing measured to take


def test_direction_probe_text_models_predict_pairs_left_out_of_the_fit():
    import itertools

    import torch

    from benchmarks.direction_probe import TextModel

    torch.manual_seed(0)
    objects, phrases = ["a", "b", "c", "d", "e"], ["above", "left of"]
    top = {(o, p): torch.randn(6) for o in objects for p in phrases}
    subject = {(o, p): torch.randn(6) for o in objects for p in phrases}
    bias = {p: torch.randn(6) for p in phrases}
    prompts = [(x, p, y) for x, y in itertools.permutations(objects, 2) for p in phrases]
    held = [w for w in prompts if {w[0], w[2]} == {"a", "b"}]
    fit = [w for w in prompts if w not in held]

    additive = TextModel("additive", objects, phrases)
    additive.fit(fit, torch.stack([top[x, p] - top[y, p] for x, p, y in fit]))
    truth = torch.stack([top[x, p] - top[y, p] for x, p, y in held])
    assert torch.allclose(additive.predict(held), truth, atol=1e-4)
    assert additive.score(held, truth)["r2"] > 0.999
    # an antisymmetric model cannot follow a target that is not a difference of per-object vectors
    assert additive.score(fit, torch.stack([subject[x, p] for x, p, y in fit]))["r2"] < 0.9

    role = TextModel("role", objects, phrases)
    role.fit(fit, torch.stack([bias[p] + subject[x, p] + top[y, p] for x, p, y in fit]))
    truth = torch.stack([bias[p] + subject[x, p] + top[y, p] for x, p, y in held])
    assert torch.allclose(role.predict(held), truth, atol=1e-4)


def test_direction_probe_runs_and_the_shipped_encoder_orders_pairs_additively(monkeypatch, capsys, tmp_path):
    import json

    import torch

    from benchmarks import direction_probe

    torch.set_num_threads(1)
    out = tmp_path / "probe.json"
    _run(direction_probe, ["--samples", "1", "--additive_alpha", "2", "--role_alpha", "--threads", "1",
                           "--output", str(out)], monkeypatch, capsys)
    result = json.loads(out.read_text())
    # fitted on the order-aware pairs only, both text models predict the control prompts they never saw
    assert result["text_models"]["additive"]["control"]["r2"] > 0.9
    assert result["text_models"]["role"]["control"]["r2"] > 0.9
    assert {(r["variant"], r["alpha"]) for r in result["rows"]} == {("base", None), ("additive", 2.0)}
    assert len(result["rows"]) == 2 * 16  # every held-out prompt, both object orders


def test_generalist_tables_pool_each_pair_and_the_split():
    from benchmarks.generalist import markdown_tables
    from rrnet.world.record import load_recipe, shipped_backbone
    from rrnet.world.vocab import prompt_for

    def rate(k, n=100):
        return {"successes": k, "n": n, "rate": k / n, "ci95": [0.0, 1.0]}

    recipe = load_recipe(shipped_backbone())
    (a, b, _), (c, d, _) = recipe.heldout_pairs[:2]  # two vertical pairs
    rows = [{"split": "heldout", "variant": "base", "alpha": None, "prompt": prompt_for(x, "above", y),
             "relation": rate(k), "objects": rate(90)} for x, y, k in ((a, b, 40), (b, a, 60), (c, d, 20))]
    rows.append({"split": "heldout", "variant": "direction", "alpha": 1.2, "prompt": prompt_for(a, "below", b),
                 "relation": rate(80), "objects": rate(95)})
    table = markdown_tables({"rows": rows}, recipe)
    base = next(line for line in table.splitlines() if line.startswith("| base |"))
    assert "| 0.50 (0.40, 0.90) | 0.20 (0.20, 0.90) |" in base  # pair pooled, worst prompt, objects
    assert base.endswith("|  |  | 0.400 (0.35-0.46), objects 0.900 (3 prompts) |")  # 120 / 300, Wilson
    assert "| direction, alpha 1.2 | 0.80 (0.80, 0.95) |" in table
    assert "train:" not in table  # no rows, no table


def test_multi_relation_merge_pools_runs_of_other_groups(tmp_path, capsys):
    import json

    from benchmarks.multi_relation import merge_results

    def rate(k, n=100):
        return {"successes": k, "n": n, "rate": k / n, "ci95": [0.0, 1.0]}

    def row(group, variant, alpha, prompt, k):
        return {"group": group, "variant": variant, "alpha": alpha, "prompt": prompt, "relations": [],
                "all_correct": rate(k), "per_relation": [rate(k), rate(k)], "objects": rate(90)}

    settings = {"samples": 100, "epochs": 100}
    first = {"settings": settings, "machine": "m", "date": "2026-12-06", "training": {"joint": {"loss": 1}},
             "rows": [row("collapsed-train", "base", None, "p1", 10), row("collapsed-train", "joint", 0.8, "p1", 40)]}
    second = {"settings": settings, "machine": "m", "date": "2026-12-07", "training": {"joint": {"loss": 1}},
              "rows": [row("control", "base", None, "p2", 90), row("control", "joint", 0.8, "p2", 80)]}
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, part in zip(paths, (first, second)):
        path.write_text(json.dumps(part))
    out = tmp_path / "merged.json"
    merge_results(paths, out)
    merged = json.loads(out.read_text())
    assert len(merged["rows"]) == 4 and merged["date"] == "2026-12-07"
    control = [s for s in merged["summary"] if s["group"] == "control" and s["variant"] == "joint"]
    assert control[0]["all_correct"]["successes"] == 80 and control[0]["per_relation"]["n"] == 200
    (tmp_path / "c.json").write_text(json.dumps({**second, "settings": {"samples": 50, "epochs": 100}}))
    with pytest.raises(SystemExit, match="other settings"):
        merge_results([tmp_path / "c.json"], out)


def test_edit_alignment_splits_an_edit_into_its_direction_and_shared_parts(tmp_path):
    import pytest
    import torch

    from benchmarks.edit_alignment import joined, parts, rectifier_at
    from rrnet.backbones.loading import load_pipeline
    from rrnet.errors import RRNetError
    from rrnet.rectifier import add_at_eot, encode_prompt
    from rrnet.world.record import shipped_backbone

    torch.set_num_threads(1)
    pipe = load_pipeline(str(shipped_backbone()), device="cpu", progress=False)
    torch.manual_seed(0)
    shared, direction = torch.randn(64), torch.randn(64)

    class Edits:
        """Adds shared + direction to prompts naming the red circle first, shared - direction otherwise."""

        def prompt_embeds(self, pipe, prompts, alpha=1.0):
            enc = encode_prompt(pipe, prompts[0])
            sign = 1.0 if prompts[0].startswith("a red circle") else -1.0
            return add_at_eot(enc.hidden[None], torch.tensor([enc.tokens.eot_index]), (shared + sign * direction)[None], alpha)

    d1, d2, got_direction, got_shared = parts(pipe, Edits(), ("red circle", "above", "blue square"))
    assert torch.allclose(got_direction, direction, atol=1e-5) and torch.allclose(got_shared, shared, atol=1e-5)
    assert torch.allclose(d1 - d2, 2 * direction, atol=1e-5)
    assert joined([("a", "b"), ("c", "b")], "a", "c") and not joined([("a", "b"), ("c", "d")], "a", "d")
    with pytest.raises(RRNetError, match="not trained"):
        rectifier_at(tmp_path, "reference/x")


def test_edit_alignment_tables_pool_each_part_over_the_pairs():
    from benchmarks.common import rate
    from benchmarks.edit_alignment import markdown_tables

    row = {"relation": "a x above a y", "eot_norm": 10.0,
           "reference": {"edit_norms": [4.0, 5.0], "direction_norm": 3.0, "shared_norm": 2.0},
           "text_direction": {"cosine": 0.5}, "distilled": {"joined": False, "cosine": None},
           "generalists": {"g": {"cosine": -0.25}}}
    summary = [{"pair": pair, "part": part, "relation": rate(k, 10), "objects": rate(10, 10), "worst_prompt_relation": k / 10}
               for pair, base in (("x / y", 2), ("z / w", 6)) for part, k in zip(("whole", "direction", "shared"), (base + 2, base + 1, base))]
    text = markdown_tables({"rows": [row], "parts_summary": summary})
    assert "| a x above a y | 4.0 / 5.0 (10.0) | 3.0 / 2.0 | n/a | +0.50 | not joined | -0.25 |" in text
    assert "| whole | 0.40 (0.40, 1.00) | 0.80 (0.80, 1.00) | 0.600 (" in text
    assert "| shared | 0.20 (0.20, 1.00) | 0.60 (0.60, 1.00) | 0.400 (" in text


def test_self_teach_labels_pools_each_pair_and_the_split():
    from benchmarks.self_teach_labels import summarise

    def row(pair: str, clear: int, agree: int, unclear: int) -> dict:
        return {"split": "heldout", "pair": pair, "samples": 10, "judged": clear + unclear, "clear": clear,
                "agree": agree, "unclear": unclear, "clear_unjudged": 10 - clear - unclear}

    rows = [row("a / b", 8, 8, 1), row("a / b", 9, 7, 0), row("c / d", 5, 5, 5)]
    by_pair = {s["pair"]: s for s in summarise(rows)}
    assert by_pair["a / b"]["agreement"]["successes"] == 15 and by_pair["a / b"]["agreement"]["n"] == 17
    assert by_pair["all"]["agreement"]["n"] == 22 and by_pair["all"]["unclear"] == 6
    assert by_pair["c / d"]["unclear_share"] == 0.5
