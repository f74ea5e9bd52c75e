"""Time to quality: how many pair steps and how much wall time a training recipe needs.

For each recipe, relation and seed: write the relation's exemplars (five per folder, the same for
every recipe and seed), train with `--points` evenly spaced checkpoints, then judge the rectifier
of every checkpoint on the relation's two prompts (both object orders) at each of `--alphas` with the
exact judge: `--samples_along` images per prompt along the way, `--samples` at the final point.
A checkpoint's accuracy is that of its best alpha: how strongly to apply a rectifier is chosen at
generation time, and one fixed alpha mixes up the edit's size (which grows with training and with
the learning rate) with its direction. Every recipe is judged the same way, so the choice favours
none. Rows record pair steps (optimiser steps), wall time of training up to that point (the run's
measured training time times the share of its steps done: every step of a recipe costs the same),
the best alpha and relation / object accuracy with Wilson intervals at every alpha. The summary gives, per recipe, the final
accuracy and the steps and time needed to reach the official recipe's final accuracy on each
relation (its rate pooled over seeds and both prompts), mean and worst over relations and seeds.
Rows are saved as they finish; a rerun resumes. Two processes can share the work (say, one per
recipe, each with its own `--output`); `--merge A.json B.json` then writes their rows, summary and
plot into `--output` without sampling anything. Wall times measured beside another process are
only comparable within a run; `--timing` trains every recipe once per relation (seed 0, no
checkpoints, nothing sampled) and stores the clean wall times under "timing".

    python -m benchmarks.time_to_quality [--recipes official fast] [--seeds 0 1 2] [--samples 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.common import judge_prompt, pooled_rate
from rrnet.atomic import atomic_write_text
from rrnet.backbones.loading import load_pipeline
from rrnet.data import load_relation
from rrnet.recipes import RECIPES, recipe_config, recipe_values
from rrnet.rectifier_files import load_rectifier
from rrnet.resume import STATE_NAME, Checkpointing, checkpoint_folders
from rrnet.train import PAIR_STEPS, rectifier_finished, train_rectifier
from rrnet.world.exemplars import folder_name, write_relation_folder
from rrnet.world.record import load_recipe, shipped_backbone, world_sampling

# collapsed train pairs of the mini world, two per axis
RELATIONS = (("red circle", "above", "blue square"), ("green triangle", "above", "yellow diamond"),
             ("red circle", "left of", "green triangle"), ("blue square", "left of", "purple cross"))


def checkpoint_rectifiers(run: Path):
    """(optimiser steps, rectifier) for every checkpoint of a finished run, and the final one."""
    from safetensors.torch import load_file

    final = load_rectifier(run)
    out = []
    for step, folder in checkpoint_folders(run):
        rect = load_rectifier(run)
        tensors = load_file(str(folder / f"{STATE_NAME}.safetensors"))
        rect.load_state_dict({k[len("module.rectifier."):]: v for k, v in tensors.items() if k.startswith("module.rectifier.")})
        out.append((step, rect.eval()))
    return out, final.eval()


def run_config(recipe: str, seed: int, quick: bool):
    """The recipe's training config; `--quick` keeps every option but a fiftieth of the epochs."""
    config = recipe_config(recipe, seed=seed)
    return replace(config, epochs=max(1, config.epochs // 50)) if quick else config


def train_run(pipe, data: Path, config, every_epochs: int, run: Path, model: str) -> dict:
    """Train (or reuse) one run with checkpoints every `every_epochs` epochs; returns its timing."""
    timing_file = run / "timing.json"
    if rectifier_finished(run) and timing_file.is_file():
        return json.loads(timing_file.read_text())
    steps_per_epoch = len(PAIR_STEPS)  # one relation: its five pair steps
    started = time.perf_counter()
    _, history = train_rectifier(pipe, load_relation(data), config, run, model_id=model, progress=False,
                                 checkpointing=Checkpointing(every=every_epochs * steps_per_epoch))
    timing = {"seconds": time.perf_counter() - started, "steps": config.epochs * steps_per_epoch,
              "epochs": config.epochs, "eot_cosine": history[-1]["eot_cosine"]}
    atomic_write_text(timing_file, json.dumps(timing) + "\n")
    return timing


def best_alpha(judged_by_alpha: dict[str, dict]) -> str:
    """The alpha (as stored: a string) with the highest relation accuracy; ties go to the smallest."""
    return max(sorted(judged_by_alpha, key=float), key=lambda k: judged_by_alpha[k]["relation"]["rate"])


def reached(rows: list[dict], target: float) -> dict | None:
    """The first row (by steps) whose relation accuracy reaches `target`."""
    for row in sorted(rows, key=lambda r: r["steps"]):
        if row["relation"]["rate"] >= target:
            return row
    return None


def summarise(rows: list[dict], recipes: list[str]) -> dict:
    """Official final accuracy per relation; per recipe final accuracy and steps/time to reach it."""
    final = {}
    for row in rows:
        if row["final"]:
            final.setdefault((row["recipe"], row["triplet"]), []).append(row)
    targets = {rel: pooled_rate(members, lambda m: m["relation"])["rate"]
               for (recipe, rel), members in final.items() if recipe == "official"}
    out = {"official_final": targets, "recipes": {}}
    for recipe in recipes:
        per_relation, needs_steps, needs_seconds, missed = {}, [], [], []
        for rel, target in targets.items():
            members = [r for r in final.get((recipe, rel), [])]
            if not members:
                continue
            per_relation[rel] = {"final": pooled_rate(members, lambda m: m["relation"]),
                                 "objects": pooled_rate(members, lambda m: m["objects"])}
            for seed in sorted({m["seed"] for m in members}):
                hit = reached([r for r in rows if r["recipe"] == recipe and r["triplet"] == rel and r["seed"] == seed],
                              target)
                if hit is None:
                    missed.append(f"{rel} seed {seed}")
                else:
                    needs_steps.append(hit["steps"])
                    needs_seconds.append(hit["seconds"])
        if per_relation:
            out["recipes"][recipe] = {
                "per_relation": per_relation,
                "steps_to_official": {"mean": statistics.mean(needs_steps), "worst": max(needs_steps)} if needs_steps else None,
                "seconds_to_official": {"mean": statistics.mean(needs_seconds), "worst": max(needs_seconds)} if needs_seconds else None,
                "never_reached": missed,
            }
    return out


def plot(rows: list[dict], path: Path) -> None:
    """Relation accuracy against pair steps, one line per recipe and relation (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        for k, rel in enumerate(dict.fromkeys(r["triplet"] for r in rows)):
            points: dict[int, list[float]] = {}
            for r in rows:
                if r["recipe"] == recipe and r["triplet"] == rel:
                    points.setdefault(r["steps"], []).append(r["relation"]["rate"])
            xs = sorted(points)
            ax.plot(xs, [statistics.mean(points[x]) for x in xs], marker=".", alpha=0.8,
                    label=recipe if k == 0 else None, color=f"C{list(RECIPES).index(recipe) % 10}")
    ax.set_xlabel("pair steps (optimiser steps)")
    ax.set_ylabel("relation accuracy (exact judge)")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(shipped_backbone()))
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--relations", type=int, default=len(RELATIONS), help="the first N of the four relations")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--points", type=int, default=5, help="checkpoints judged along each run (evenly spaced epochs)")
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.6, 1.0, 1.4],
                    help="each checkpoint is judged at each; its accuracy is the best alpha's")
    ap.add_argument("--samples", type=int, default=100, help="images per prompt at the final point")
    ap.add_argument("--samples_along", type=int, default=50, help="images per prompt at earlier checkpoints")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="outputs/time-to-quality")
    ap.add_argument("--output", default="benchmarks/results/time_to_quality.json")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run in seconds: one relation, seed 0, a fiftieth of each recipe's epochs, 4 images")
    ap.add_argument("--timing", action="store_true",
                    help="only time each recipe's whole training once per relation (run it with nothing else on the machine)")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="combine these result files' rows into --output and stop")
    args = ap.parse_args(argv)
    if args.merge:
        merge(args.merge, Path(args.output))
        return
    if args.quick:
        args.relations, args.seeds, args.points, args.alphas = 1, [0], 2, args.alphas[:1]
        args.samples, args.samples_along = 4, 2
    torch.set_num_threads(args.threads)

    out, work, model = Path(args.output), Path(args.work), str(args.model)
    sampling = world_sampling(model)
    steps, guidance = sampling["num_inference_steps"], sampling["guidance_scale"]
    settings = {"model": model, "quick": args.quick, "alphas": args.alphas, "samples": args.samples, "samples_along": args.samples_along,
                "points": args.points, "sampling": sampling,
                "recipes": {name: recipe_values(name) for name in args.recipes}}
    result = json.loads(out.read_text()) if out.is_file() else {}
    if measured_alike(result.get("settings", settings)) != measured_alike(settings):
        raise SystemExit(f"{out} was measured with other settings; move it away to measure again")
    settings["recipes"] = {**result.get("settings", {}).get("recipes", {}), **settings["recipes"]}
    result.update(settings=settings, machine=f"2-core CPU, torch {torch.__version__}, {args.threads} thread(s)")
    rows = {(r["recipe"], r["triplet"], r["seed"], r["steps"]): r for r in result.get("rows", [])}

    pipe = load_pipeline(model, device="cpu", progress=False)
    size = load_recipe(model).size
    if args.timing:
        result["timing"] = {**result.get("timing", {}), **clean_timing(pipe, args, work, size, model)}
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        for recipe, t in result["timing"].items():
            print(f"{recipe}: {t['mean_seconds']:.1f} s per training run on average ({t['steps']} pair steps)")
        return
    for a, relation, b in RELATIONS[: args.relations]:
        rel = f"{a} {relation} {b}"
        data = write_relation_folder(work / "data", a, relation, b, n_images=5, size=size, seed=0)
        for recipe in args.recipes:
            for seed in args.seeds:
                run = work / "runs" / recipe / folder_name(a, relation, b) / f"seed-{seed}"
                config = run_config(recipe, seed, args.quick)
                every = max(1, config.epochs // args.points)
                timing = train_run(pipe, data, config, every, run, model)
                checkpoints, final = checkpoint_rectifiers(run)
                points = [(s, r, False) for s, r in checkpoints if s < timing["steps"]] + [(timing["steps"], final, True)]
                for step, rect, is_final in points:
                    if (recipe, rel, seed, step) in rows:
                        continue
                    n = args.samples if is_final else args.samples_along
                    by_alpha = {}
                    for alpha in args.alphas:
                        judged = [judge_prompt(pipe, words, alpha, rect, (words[0], relation, words[2]), n, 0, steps, guidance)
                                  for words in ((a, relation, b), (b, relation, a))]
                        by_alpha[f"{alpha:g}"] = {"relation": pooled_rate(judged, lambda m: m["relation"]),
                                                  "objects": pooled_rate(judged, lambda m: m["objects"]),
                                                  "per_prompt": [j["relation"]["rate"] for j in judged]}
                    best = best_alpha(by_alpha)
                    rows[(recipe, rel, seed, step)] = {
                        "recipe": recipe, "triplet": rel, "seed": seed, "steps": step, "final": is_final,
                        "epochs": step // len(PAIR_STEPS), "seconds": timing["seconds"] * step / timing["steps"],
                        "alpha": float(best), **by_alpha[best], "alphas": by_alpha,
                    }
                    write_result(result, list(rows.values()), args.recipes, out)
                print(f"{recipe} {rel} seed {seed}: trained in {timing['seconds']:.0f} s, "
                      f"final relation accuracy {rows[(recipe, rel, seed, timing['steps'])]['relation']['rate']:.3f}")
    if rows:
        plot(list(rows.values()), out.with_suffix(".png"))
    report(result)


def clean_timing(pipe, args, work: Path, size: int, model: str) -> dict:
    """Wall time of one whole training run per recipe and relation (seed 0), nothing else timed."""
    import tempfile

    timing = {}
    for recipe in args.recipes:
        config = run_config(recipe, 0, args.quick)
        seconds = {}
        for a, relation, b in RELATIONS[: args.relations]:
            data = write_relation_folder(work / "data", a, relation, b, n_images=5, size=size, seed=0)
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                train_rectifier(pipe, load_relation(data), config, Path(tmp) / "run", model_id=model, progress=False)
                seconds[f"{a} {relation} {b}"] = time.perf_counter() - started
        timing[recipe] = {"steps": config.epochs * len(PAIR_STEPS), "seconds": seconds, "mean_seconds": statistics.mean(seconds.values()),
                          "threads": args.threads, "date": time.strftime("%Y-%m-%d")}
    return timing


def measured_alike(settings: dict) -> dict:
    """The settings two results must share to be pooled (the recipes they cover may differ)."""
    return {k: v for k, v in settings.items() if k != "recipes"}


def write_result(result: dict, rows: list[dict], recipes: list[str], out: Path) -> None:
    """Store rows (sorted), their summary and the date, atomically."""
    result["rows"] = sorted(rows, key=lambda r: (r["recipe"], r["triplet"], r["seed"], r["steps"]))
    result["summary"] = summarise(result["rows"], recipes)
    result["date"] = time.strftime("%Y-%m-%d")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")


def merge(paths: list[str], out: Path) -> None:
    """One result from several runs of the same settings (their rows pooled), with its plot."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    first = measured_alike(parts[0]["settings"])
    for path, part in zip(paths, parts):
        if measured_alike(part["settings"]) != first:
            raise SystemExit(f"{path} was measured with other settings than {paths[0]}; they cannot be merged")
    recipes: dict = {}
    rows: dict = {}
    for part in parts:
        recipes.update(part["settings"]["recipes"])
        rows.update({(r["recipe"], r["triplet"], r["seed"], r["steps"]): r for r in part["rows"]})
    result = {"settings": {**parts[0]["settings"], "recipes": recipes}, "machine": parts[0]["machine"]}
    write_result(result, list(rows.values()), [r for r in RECIPES if r in recipes], out)
    plot(result["rows"], out.with_suffix(".png"))
    report(result)


def report(result: dict) -> None:
    for recipe, s in result.get("summary", {}).get("recipes", {}).items():
        print(f"{recipe}: steps to the official final accuracy {s['steps_to_official']}, "
              f"seconds {s['seconds_to_official']}, never reached: {s['never_reached'] or 'none'}")


if __name__ == "__main__":
    main()
