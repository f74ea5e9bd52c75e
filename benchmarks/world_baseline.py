"""Measure the mini world: is the paper's situation reproduced, and does rectification fix it?

Parts (each saved into the JSON as soon as it is done; a rerun skips finished parts):
  eot       EOT cosine of object-swapped prompts for every pair on both axes, and inside
            two-relation captions (computed from the model's text encoder);
  base      base relation / object accuracy per pair on each axis and per direction
            ("above" and "left of", both object orders), every pair of the world;
  scenes    two-relation captions built from collapsed pairs and from control pairs (a vertical
            and a horizontal pair sharing an object, all four arrangements): all-correct rate,
            per-relation accuracy, object accuracy;
  rectify   `rrnet train` (official recipe) on red circle / above / blue square, then relation
            and object accuracy per alpha on its two prompts and on the held-out vertical pairs.
Object accuracy per object is computed from the two-object images of `base`. Every rate comes
with its 95 % Wilson interval. Sampling settings are the model's own (world.json).

    python -m benchmarks.world_baseline [--samples 100] [--parts eot base scenes rectify]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import rate
from rrnet.atomic import atomic_write_text
from rrnet.backbones.loading import load_pipeline
from rrnet.data import load_relation
from rrnet.generate import prompt_embeddings, sample_arrays
from rrnet.train import TrainConfig, train_rectifier
from rrnet.world.benchmark import scene_relations
from rrnet.world.corpus import Corpus, relation_item
from rrnet.world.evaluate import score_caption
from rrnet.world.exemplars import write_relation_folder
from rrnet.world.judge import judge_image, judge_relations
from rrnet.world.recipe import AXES
from rrnet.world.record import load_recipe, shipped_backbone, world_sampling
from rrnet.world.text_model import swapped_cosines
from rrnet.world.vocab import object_names, swap_clause

TARGET = ("red circle", "above", "blue square")
PHRASE = {"y": "above", "x": "left of"}
PARTS = ("eot", "base", "scenes", "rectify")


def part_eot(pipe, recipe) -> dict:
    corpus = Corpus.build(recipe)
    rows = []
    for it, k, cos in swapped_cosines(pipe.text_encoder, pipe.tokenizer, corpus.pairs):
        (a, relation, b), = it.triplets
        if a < b:  # each unordered pair once per phrase
            axis = "x" if relation in ("left of", "right of") else "y"
            rows.append({"pair": [a, b], "relation": relation, "axis": axis, "split": recipe.split_of(a, b, axis) or "order-aware",
                         "eot_cosine": cos})
    scene_rows = swapped_cosines(pipe.text_encoder, pipe.tokenizer, corpus.scenes)
    aware = [c for it, k, c in scene_rows if not it.collapsed[k]]
    collapsed = [c for it, k, c in scene_rows if it.collapsed[k]]
    return {"pairs": rows, "scenes": {"order_aware_mean": float(np.mean(aware)), "order_aware_max": float(np.max(aware)),
                                      "collapsed_mean": float(np.mean(collapsed)), "collapsed_min": float(np.min(collapsed)),
                                      "relations": len(scene_rows)}}


def part_base(pipe, recipe, n: int, seed: int, steps: int, guidance: float, progress) -> dict:
    rows = []
    found = {obj: [0, 0] for obj in object_names()}
    pairs = [(a, b, axis) for a, b in itertools.combinations(object_names(), 2) for axis in AXES]
    for a, b, axis in progress(pairs, "base pairs"):
        for x, y in ((a, b), (b, a)):
            relation = PHRASE[axis]
            with torch.no_grad():
                embeds = prompt_embeddings(pipe, f"a {x} {relation} a {y}", None, None)
            images = sample_arrays(pipe, embeds, n, seed, steps, guidance)
            judged = [judge_image(im, x, relation, y) for im in images]
            for obj, key in ((x, "has_a"), (y, "has_b")):
                found[obj][0] += sum(getattr(j, key) for j in judged)
                found[obj][1] += n
            rows.append({"prompt": f"a {x} {relation} a {y}", "pair": [a, b], "axis": axis,
                         "split": recipe.split_of(a, b, axis) or "order-aware",
                         "relation": rate(sum(j.verdict == "ARB" for j in judged), n),
                         "swapped": rate(sum(j.verdict == "BRA" for j in judged), n),
                         "objects": rate(sum(j.has_a and j.has_b for j in judged), n)})
    return {"prompts": rows, "objects": {obj: rate(k, m) for obj, (k, m) in found.items()}}


def _arrangements(triplets):
    """The caption and its three rearrangements (swap either relation's objects, or both)."""
    return [triplets, swap_clause(triplets, 0), swap_clause(triplets, 1), swap_clause(swap_clause(triplets, 0), 1)]


def part_scenes(pipe, recipe, n: int, seed: int, steps: int, guidance: float, progress) -> dict:
    groups = {"collapsed": scene_relations(recipe.collapsed_pairs, ["above", "left of"]),
              "control": scene_relations(recipe.control_pairs, ["above", "left of"])}
    out = {}
    for group, combos in groups.items():
        rows = []
        for combo in progress(combos, f"{group} scenes"):
            for triplets in _arrangements(combo):
                score, images = score_caption(pipe, triplets, n=n, seed=seed, steps=steps, guidance=guidance)
                judged = [judge_relations(im, triplets) for im in images]
                rows.append({"prompt": score["prompt"], "relations": [list(t) for t in triplets],
                             "collapsed": list(relation_item(recipe, triplets).collapsed),
                             "all_correct": rate(sum(j.all_correct for j in judged), n),
                             "per_relation": [rate(sum(j.outcomes[k] == "correct" for j in judged), n) for k in range(2)],
                             "per_relation_neither": [rate(sum(j.outcomes[k] == "neither" for j in judged), n) for k in range(2)],
                             "objects": rate(sum(j.objects_found for j in judged), n)})
        total = sum(r["all_correct"]["successes"] for r in rows), sum(r["all_correct"]["n"] for r in rows)
        objects = sum(r["objects"]["successes"] for r in rows), sum(r["objects"]["n"] for r in rows)
        out[group] = {"prompts": rows, "all_correct": rate(*total), "objects": rate(*objects)}
    return out


def part_rectify(pipe, recipe, n: int, seed: int, steps: int, guidance: float, alphas, epochs: int, exemplars: int,
                 work: Path, progress) -> dict:
    data = write_relation_folder(work / "data", *TARGET, n_images=exemplars, size=recipe.size, seed=seed)
    rect, history = train_rectifier(pipe, load_relation(data), TrainConfig(epochs=epochs, seed=seed), work / "rectifier",
                                    progress=False)
    heldout = [(a, b) for a, b, axis in recipe.heldout_pairs if axis == "y"]
    jobs = [(TARGET[0], TARGET[2], "trained"), (TARGET[2], TARGET[0], "trained")]
    jobs += [(x, y, "held-out") for a, b in heldout for x, y in ((a, b), (b, a))]
    rows = []
    for a, b, kind in progress(jobs, "rectified prompts"):
        for alpha in [None, *alphas]:
            with torch.no_grad():
                embeds = prompt_embeddings(pipe, f"a {a} {TARGET[1]} a {b}", alpha, rect, (a, TARGET[1], b))
            images = sample_arrays(pipe, embeds, n, seed, steps, guidance)
            judged = [judge_image(im, a, TARGET[1], b) for im in images]
            rows.append({"pair": kind, "prompt": f"a {a} {TARGET[1]} a {b}", "setting": "base" if alpha is None else f"alpha={alpha:g}",
                         "relation": rate(sum(j.verdict == "ARB" for j in judged), n),
                         "objects": rate(sum(j.has_a and j.has_b for j in judged), n)})
    return {"training": {"relation": list(TARGET), "recipe": "official", "epochs": epochs, "exemplars": exemplars,
                         "eot_cosine_base": history[-1]["eot_cosine_base"], "eot_cosine_rectified": history[-1]["eot_cosine"]},
            "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(shipped_backbone()))
    ap.add_argument("--samples", type=int, default=100, help="images per prompt and setting")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    ap.add_argument("--alpha", type=float, nargs="+", default=[0.4, 0.8, 1.2, 1.6, 2.0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--exemplars", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--redo", action="store_true", help="measure the parts again even if the JSON has them")
    ap.add_argument("--output", default="benchmarks/results/world_baseline.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from tqdm.auto import tqdm

    def progress(items, desc):
        return tqdm(items, desc=desc)

    out = Path(args.output)
    result = json.loads(out.read_text()) if out.is_file() and not args.redo else {}
    recipe = load_recipe(args.model)
    sampling = world_sampling(args.model)
    steps, guidance = sampling["num_inference_steps"], sampling["guidance_scale"]
    result.update({"model": args.model, "samples": args.samples, "sampling": sampling, "seed": args.seed,
                   "machine": "2-core CPU, torch " + torch.__version__})
    pipe = load_pipeline(args.model, device="cpu", progress=False)
    for part in args.parts:
        if part in result.get("parts", {}):
            print(f"{part}: already measured (use --redo to measure again)")
            continue
        started = time.time()
        common = (pipe, recipe, args.samples, args.seed, steps, guidance)
        if part == "eot":
            value = part_eot(pipe, recipe)
        elif part == "base":
            value = part_base(*common, progress)
        elif part == "scenes":
            value = part_scenes(*common, progress)
        else:
            value = part_rectify(*common, args.alpha, args.epochs, args.exemplars, out.with_suffix(""), progress)
        value["seconds"] = time.time() - started
        value["date"] = time.strftime("%Y-%m-%d")
        result.setdefault("parts", {})[part] = value
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        print(f"{part}: done in {value['seconds']:.0f} s -> {out}")


if __name__ == "__main__":
    main()
