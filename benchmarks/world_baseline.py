"""Measure the mini world: is the paper's situation reproduced, and does rectification fix it?

Prints (and writes as JSON):
  1. OSP EOT cosine of the base text encoder: order-aware pairs vs the collapsed target pairs;
  2. base model object / relation accuracy on order-aware pairs and on the collapsed pairs;
  3. after `rrnet train` on one collapsed pair (5 exemplar images per folder): relation and
     object accuracy per alpha on both prompts, and on the other collapsed pairs with the same
     relation (unseen objects, the same rectifier applied with their words).

    python -m benchmarks.world_baseline [--samples 100] [--output benchmarks/results/world_baseline.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rrnet.backbones.loading import load_pipeline
from rrnet.data import load_relation
from rrnet.rectifier import encode_prompt
from rrnet.train import TrainConfig, train_rectifier
from rrnet.world.build import SAMPLING, load_recipe, shipped_backbone
from rrnet.world.corpus import pair_prompts
from rrnet.world.evaluate import score_prompt
from rrnet.world.exemplars import write_relation_folder

TARGET = ("red circle", "above", "blue square")


def eot_cosine(pipe, p1: str, p2: str) -> float:
    return F.cosine_similarity(encode_prompt(pipe, p1).eot, encode_prompt(pipe, p2).eot, dim=0).item()


def fmt(rows: list[dict], keys: list[str]) -> str:
    head = "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys)
    body = ["| " + " | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join([head, *body])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(shipped_backbone()))
    ap.add_argument("--samples", type=int, default=100, help="images per prompt and setting")
    ap.add_argument("--aware_pairs", type=int, default=12, help="order-aware prompts sampled for the base model")
    ap.add_argument("--alpha", type=float, nargs="+", default=[0.4, 0.8, 1.2, 1.6, 2.0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--exemplars", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", default="benchmarks/results/world_baseline.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    recipe = load_recipe(args.model)
    pipe = load_pipeline(args.model, device="cpu", progress=False)
    steps, guidance = SAMPLING["num_inference_steps"], SAMPLING["guidance_scale"]
    n = args.samples
    result: dict = {"model": args.model, "samples": n, "sampling": SAMPLING, "seed": args.seed}

    items = pair_prompts(recipe)
    aware = [it for it in items if not it.collapsed]
    collapsed = [it for it in items if it.collapsed and it.relation == TARGET[1]]
    cos_aware = [eot_cosine(pipe, it.text, f"a {it.objects[1]} {it.relation} a {it.objects[0]}") for it in aware]
    cos_collapsed = [eot_cosine(pipe, it.text, f"a {it.objects[1]} {it.relation} a {it.objects[0]}") for it in collapsed]
    result["eot_cosine"] = {"order_aware_mean": float(np.mean(cos_aware)), "collapsed_min": float(min(cos_collapsed)),
                            "collapsed_mean": float(np.mean(cos_collapsed))}
    print("OSP EOT cosine:", json.dumps(result["eot_cosine"]))

    rng = np.random.default_rng(args.seed)
    base_rows = []
    for it in [aware[i] for i in rng.choice(len(aware), args.aware_pairs, replace=False)] + collapsed:
        a, b = it.objects
        score, _ = score_prompt(pipe, a, it.relation, b, n=n, seed=args.seed, steps=steps, guidance=guidance)
        base_rows.append({"group": "collapsed" if it.collapsed else "order-aware", **score.as_dict()})
    result["base"] = base_rows
    for group in ("order-aware", "collapsed"):
        rows = [r for r in base_rows if r["group"] == group]
        print(f"base {group}: relation acc {np.mean([r['relation_accuracy'] for r in rows]):.3f}, "
              f"object acc {np.mean([r['object_accuracy'] for r in rows]):.3f} over {len(rows)} prompts x {n}")
    print(fmt(base_rows, ["group", "prompt", "relation_accuracy", "swapped_rate", "object_accuracy"]))

    work = Path(args.output).with_suffix("")
    data = write_relation_folder(work / "data", *TARGET, n_images=args.exemplars, size=recipe.size, seed=args.seed)
    rect, history = train_rectifier(pipe, load_relation(data), TrainConfig(epochs=args.epochs, seed=args.seed), work / "rectifier")
    result["training"] = {"epochs": args.epochs, "exemplars": args.exemplars, "eot_cosine_base": history[-1]["eot_cosine_base"],
                          "eot_cosine_rectified": history[-1]["eot_cosine"]}
    rows = []
    others = [(it.objects[0], it.objects[1]) for it in collapsed if set(it.objects) != {TARGET[0], TARGET[2]}]
    unseen = sorted({tuple(sorted(p)) for p in others})
    for a, b, kind in [(TARGET[0], TARGET[2], "trained"), (TARGET[2], TARGET[0], "trained")] + \
                      [(x, y, "unseen") for p in unseen for x, y in (p, p[::-1])]:
        for alpha in [None, *args.alpha]:
            score, _ = score_prompt(pipe, a, TARGET[1], b, n=n, seed=args.seed, alpha=alpha, rectifier=rect, steps=steps,
                                    guidance=guidance, triplet=(a, TARGET[1], b))
            rows.append({"pair": kind, "setting": "base" if alpha is None else f"alpha={alpha:g}", **score.as_dict()})
    result["rectified"] = rows
    print(fmt(rows, ["pair", "prompt", "setting", "relation_accuracy", "swapped_rate", "object_accuracy"]))
    result["seconds"] = time.time() - started
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.output} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
