"""Several relations in one prompt: the base model, the paper's summed adjustments, one joint graph.

Trains two rectifiers on the mini world's `train` pairs (both relations of each pair's axis, five
exemplars per folder):
  summed  one relation per prompt; a two-relation prompt gets each relation's adjustment from its
          own graph, summed at the EOT (the paper's Appendix E.2);
  joint   the same relations plus the two-relation captions built from train pairs (three-object
          exemplars; negatives swap one relation's objects at a time); a two-relation prompt gets
          one adjustment from one graph;
  gated   the joint rectifier editing only the relations whose direction the text encoder loses
          (`collapse_gate`: EOT cosine of "a A R a B" and "a B R a A" >= 0.99); a caption whose gated
          embeddings equal the joint or the base ones bit for bit takes that row (`same_embeddings_as`).
Both use the same recipe flags (antisymmetric, direction targets from the order-aware pairs).
Then samples two-relation captions, each in all four arrangements, built from collapsed pairs
(train-built and with a held-out pair, separately) and from control pairs, and reports the
all-relations-correct rate, per-relation accuracy and object accuracy with 95 % Wilson intervals,
and draws a grid of base / summed / joint / gated samples (each at its best alpha on train-built captions).
Rows are saved as they finish; a rerun resumes.

    python -m benchmarks.multi_relation [--samples 100] [--alpha 0.8 1.2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image

from benchmarks.common import COLLAPSE_GATE, grouped_rows, merge_result_files, pooled_rate, rate
from rrnet.atomic import atomic_write_text
from rrnet.backbones.loading import load_pipeline
from rrnet.data import load_relations, save_image_atomic
from rrnet.generate import prompt_embeddings
from rrnet.grid import image_grid, mosaic
from rrnet.rectifier_files import load_rectifier
from rrnet.train import TrainConfig, rectifier_finished, train_rectifier
from rrnet.world.benchmark import (direction_prompt_pairs, order_aware_pairs, pair_relations, scene_relations,
                                   write_world_benchmark)
from rrnet.generate import sample_arrays
from rrnet.world.judge import judge_relations
from rrnet.world.record import load_recipe, shipped_backbone, world_sampling
from rrnet.world.vocab import caption_for, swap_clause

VARIANTS = ("base", "summed", "joint", "gated")
# `gated`: the joint rectifier with `collapse_gate` (benchmarks.common.COLLAPSE_GATE)
GROUPS = ("collapsed-train", "collapsed-heldout", "control")
PHRASES = ["above", "left of"]


def arrangements(triplets):
    """A caption and its three rearrangements (either relation's objects swapped, or both)."""
    return [triplets, swap_clause(triplets, 0), swap_clause(triplets, 1), swap_clause(swap_clause(triplets, 0), 1)]


def caption_groups(recipe) -> dict[str, list]:
    train = set(recipe.train_pairs)
    collapsed = scene_relations(recipe.collapsed_pairs, PHRASES)

    def from_train(scene) -> bool:
        return all(any({t[0], t[2]} == {a, b} for a, b, _ in train) for t in scene)

    return {"collapsed-train": [s for s in collapsed if from_train(s)],
            "collapsed-heldout": [s for s in collapsed if not from_train(s)],
            "control": scene_relations(recipe.control_pairs, PHRASES)}


def train_variants(pipe, recipe, work: Path, args) -> dict[str, Path]:
    relations = write_world_benchmark(work / "data" / "relations", pair_relations(recipe.train_pairs), args.exemplars,
                                      recipe.size, args.seed)
    scenes = write_world_benchmark(work / "data" / "scenes", [s for scene in caption_groups(recipe)["collapsed-train"]
                                                              for s in arrangements(scene)], args.exemplars,
                                   recipe.size, args.seed)
    config = TrainConfig(epochs=args.epochs, learning_rate=args.learning_rate, seed=args.seed,
                         relations_per_step=args.relations_per_step, antisymmetric=args.antisymmetric,
                         direction_weight=args.direction_weight)
    directions = direction_prompt_pairs(order_aware_pairs(recipe)) if args.direction_weight > 0 else None
    folders = {}
    for name, data in (("summed", [relations]), ("joint", [relations, scenes])):
        out = work / "rectifiers" / name
        if not rectifier_finished(out):
            started = time.time()
            items = load_relations(data)
            train_rectifier(pipe, items, config, out, model_id=str(args.model), progress=False, direction_pairs=directions)
            print(f"trained {name} on {len(items)} items in {time.time() - started:.0f} s")
        folders[name] = out
    return folders


def caption_embeds(pipe, triplets, alpha, rectifier, gate: float | None = None) -> torch.Tensor:
    """The caption's embeddings: the base model's, or rectified (the triplets read from the prompt)."""
    prompt = caption_for(triplets)
    with torch.no_grad():
        if rectifier is None:
            return prompt_embeddings(pipe, prompt, None, None)
        return rectifier.prompt_embeds(pipe, prompt, alpha=alpha, strict=True, collapse_gate=gate)


def variant_rectifier(rectifiers: dict, variant: str):
    """(rectifier, collapse gate) of a variant; the base model has neither."""
    if variant == "gated":
        return rectifiers.get("joint"), COLLAPSE_GATE
    return rectifiers.get(variant), None


def same_embeddings_row(pipe, triplets, alpha, gated: torch.Tensor, rectifiers: dict, rows: dict,
                        prompt: str) -> dict | None:
    """The measured row whose embeddings the gated variant's (`gated`) equal bit for bit (same seeds, same
    images), if any.

    The gate either passes every relation of a caption (the joint rectifier's embeddings) or none (the base
    model's); sampling such a caption again would only repeat those images."""
    for variant, key_alpha in (("joint", alpha), ("base", None)):
        row = rows.get((variant, key_alpha, prompt))
        if row is not None and torch.equal(gated, caption_embeds(pipe, triplets, key_alpha, rectifiers.get(variant))):
            return row
    return None


def judge_caption(pipe, triplets, embeds: torch.Tensor, n, seed, steps, guidance) -> dict:
    judged = [judge_relations(im, triplets) for im in sample_arrays(pipe, embeds, n, seed, steps, guidance)]
    return {"all_correct": rate(sum(j.all_correct for j in judged), n),
            "per_relation": [rate(sum(j.outcomes[k] == "correct" for j in judged), n) for k in range(len(triplets))],
            "objects": rate(sum(j.objects_found for j in judged), n)}


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for (group, variant, alpha), members in grouped_rows(rows, "group", GROUPS, VARIANTS):
        out.append({"group": group, "variant": variant, "alpha": alpha, "prompts": len(members),
                    "all_correct": pooled_rate(members, lambda m: m["all_correct"]),
                    "per_relation": pooled_rate(members, lambda m: {"successes": sum(r["successes"] for r in m["per_relation"]),
                                                      "n": sum(r["n"] for r in m["per_relation"])}),
                    "objects": pooled_rate(members, lambda m: m["objects"])})
    return out


def best_alphas(summary: list[dict], variants) -> dict[str, float | None]:
    """Each variant's alpha with the highest all-correct rate on collapsed train-built captions."""
    best = {"base": None}
    for variant in variants:
        rows = [s for s in summary if s["variant"] == variant and s["group"] == "collapsed-train"]
        if variant != "base" and rows:
            best[variant] = max(rows, key=lambda s: s["all_correct"]["rate"])["alpha"]
    return best


def write_grid(pipe, recipe, rectifiers, alphas, path: Path, steps, guidance, seed: int) -> None:
    """Rows: the first caption of each group in two arrangements; columns: the variants (4 samples each)."""
    rows, labels = [], []
    for group, scenes in caption_groups(recipe).items():
        for triplets in arrangements(scenes[0])[::3]:
            cells = []
            for variant, alpha in alphas.items():
                images = sample_arrays(pipe, caption_embeds(pipe, triplets, alpha, *variant_rectifier(rectifiers, variant)),
                                       4, seed, steps, guidance)
                cells.append(mosaic([Image.fromarray(im) for im in images]))
            rows.append(cells)
            labels.append(f"{group}: {caption_for(triplets)}")
    columns = [v if a is None else f"{v} (alpha={a:g})" for v, a in alphas.items()]
    save_image_atomic(image_grid(rows, labels, columns, label_width=300), path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(shipped_backbone()))
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--groups", nargs="+", default=list(GROUPS), choices=GROUPS)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--alpha", type=float, nargs="+", default=[0.8, 1.2])
    ap.add_argument("--max_captions", type=int, default=None, help="first N captions of each group (all four arrangements)")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--learning_rate", type=float, default=1e-3)
    ap.add_argument("--relations_per_step", type=int, default=8)
    ap.add_argument("--antisymmetric", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--direction_weight", type=float, default=1.0, help="0: no direction targets")
    ap.add_argument("--exemplars", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="outputs/multi_relation")
    ap.add_argument("--output", default="benchmarks/results/multi_relation.json")
    ap.add_argument("--grid", default="benchmarks/results/multi_relation_grid.png",
                    help="samples of each variant, each at its best alpha on collapsed train-built captions")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="pool the rows of result files measured with the same "
                    "settings (runs of other --groups made side by side) into --output, then stop")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.merge:
        merge_results([Path(p) for p in args.merge], Path(args.output))
        return

    out, work = Path(args.output), Path(args.work)
    recipe, sampling = load_recipe(args.model), world_sampling(args.model)
    steps, guidance = sampling["num_inference_steps"], sampling["guidance_scale"]
    settings = {key: getattr(args, key) for key in ("samples", "epochs", "learning_rate", "relations_per_step",
                                                    "antisymmetric", "direction_weight", "exemplars", "seed")}
    settings.update(model=str(args.model), sampling=sampling)
    result = json.loads(out.read_text()) if out.is_file() else {}
    if result.get("settings", settings) != settings:
        raise SystemExit(f"{out} was measured with other settings; move it away to measure again")
    result.update(settings=settings, machine="2-core CPU, torch " + torch.__version__)
    rows = {(r["variant"], r["alpha"], r["prompt"]): r for r in result.get("rows", [])}

    pipe = load_pipeline(args.model, device="cpu", progress=False)
    folders = train_variants(pipe, recipe, work, args) if set(args.variants) - {"base"} else {}
    rectifiers = {name: load_rectifier(folder) for name, folder in folders.items()}
    result["training"] = {name: json.loads((folder / "train_log.jsonl").read_text().splitlines()[-1])
                          for name, folder in folders.items()}
    started = time.time()
    for group, scenes in caption_groups(recipe).items():
        if group not in args.groups:
            continue
        for scene in scenes[: args.max_captions]:
            for triplets in arrangements(scene):
                prompt = caption_for(triplets)
                for variant in args.variants:
                    rectifier, gate = variant_rectifier(rectifiers, variant)
                    for alpha in ([None] if variant == "base" else args.alpha):
                        if (variant, alpha, prompt) in rows:
                            continue
                        row = {"group": group, "variant": variant, "alpha": alpha, "prompt": prompt,
                               "relations": [list(t) for t in triplets]}
                        embeds = caption_embeds(pipe, triplets, alpha, rectifier, gate)
                        same = (same_embeddings_row(pipe, triplets, alpha, embeds, rectifiers, rows, prompt)
                                if variant == "gated" else None)
                        if same is not None:
                            row.update({k: same[k] for k in ("all_correct", "per_relation", "objects")},
                                       same_embeddings_as=same["variant"])
                        else:
                            row.update(judge_caption(pipe, triplets, embeds, args.samples, args.seed, steps, guidance))
                        rows[(variant, alpha, prompt)] = row
                        result.update(rows=list(rows.values()), summary=summarise(list(rows.values())),
                                      date=time.strftime("%Y-%m-%d"))
                        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
                print(f"{prompt}: done ({time.time() - started:.0f} s)")
    summary = summarise(list(rows.values()))
    if args.grid:
        write_grid(pipe, recipe, rectifiers, best_alphas(summary, args.variants), Path(args.grid), steps, guidance,
                   args.seed)
    for s in summary:
        alpha = "" if s["alpha"] is None else f" alpha={s['alpha']:g}"
        print(f"{s['group']:18s} {s['variant']}{alpha}: all correct {s['all_correct']['rate']:.3f}, per relation "
              f"{s['per_relation']['rate']:.3f}, objects {s['objects']['rate']:.3f}")


def merge_results(paths: list[Path], out: Path) -> None:
    """Pool runs of other caption groups made side by side: rows and training logs."""
    merge_result_files(paths, out, {"rows": lambda r: (r["variant"], r["alpha"], r["prompt"])}, summarise)


if __name__ == "__main__":
    main()
