"""How well the denoiser's own object regions read a sample's layout (rrnet.self_teach).

Samples every prompt of the chosen splits of the mini world (both object orders of each pair's
relations) with the base model, reads each image's layout as `rrnet teach` does (single-object
captions compared per latent pixel, centroids along the relation's axis), judges every image
exactly, and reports per pair: how often a clear reading agrees with the judge (95 % Wilson
interval), and how many images the reader leaves unclear. Images the judge cannot read (an object
missing, a diagonal or overlapping layout) are counted apart.

    python -m benchmarks.self_teach_labels [--samples 100] [--splits heldout train control]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.common import rate, sampled_images
from rrnet.atomic import atomic_write_text
from rrnet.backbones.loading import load_pipeline
from rrnet.self_teach import read_layouts
from rrnet.world.benchmark import pair_relations, split_pairs
from rrnet.world.judge import judge_image
from rrnet.world.record import shipped_backbone, world_sampling
from rrnet.world.vocab import prompt_for

SPLITS = ("heldout", "train", "control")


def reading_counts(layouts: list[str | None], verdicts: list[str]) -> dict:
    """Readings (layout or None) against the exact judge's verdicts: images the judge reads, clear
    readings among them, those agreeing, unclear ones, and clear readings of images it cannot read."""
    judged = [(r, v) for r, v in zip(layouts, verdicts) if v in ("ARB", "BRA")]
    return {"samples": len(layouts), "judged": len(judged), "clear": sum(r is not None for r, _ in judged),
            "agree": sum(r == v for r, v in judged), "unclear": sum(r is None for r, _ in judged),
            "clear_unjudged": sum(r is not None and v not in ("ARB", "BRA") for r, v in zip(layouts, verdicts))}


def count_prompt(pipe, words: tuple[str, str, str], n: int, seed: int, steps: int, guidance: float) -> dict:
    """`reading_counts` over `n` base samples of "A R B"."""
    images = sampled_images(pipe, prompt_for(*words), None, None, None, n, seed, steps, guidance)
    return reading_counts([r.layout for r in read_layouts(pipe, images, *words)],
                          [judge_image(im, *words).verdict for im in images])


def summarise(rows: list[dict]) -> list[dict]:
    """Per split and pair, and per split: agreement of clear readings and the unclear share."""
    out = []
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["split"], row["pair"]), []).append(row)
        groups.setdefault((row["split"], "all"), []).append(row)
    for (split, pair), members in groups.items():
        total = {k: sum(m[k] for m in members) for k in ("samples", "judged", "clear", "agree", "unclear", "clear_unjudged")}
        out.append({"split": split, "pair": pair, **total, "agreement": rate(total["agree"], total["clear"]),
                    "unclear_share": total["unclear"] / max(1, total["judged"])})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(shipped_backbone()))
    ap.add_argument("--samples", type=int, default=100, help="images per prompt")
    ap.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", default="benchmarks/results/self_teach_labels.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from rrnet.world.record import load_recipe

    recipe, sampling = load_recipe(args.model), world_sampling(args.model)
    pipe = load_pipeline(args.model, device="cpu", progress=False)
    pipe.set_progress_bar_config(disable=True)
    rows = []
    started = time.time()
    for split in args.splits:
        for a, relation, b in pair_relations(split_pairs(recipe, [split])):
            for words in ((a, relation, b), (b, relation, a)):
                counts = count_prompt(pipe, words, args.samples, args.seed, sampling["num_inference_steps"],
                                      sampling["guidance_scale"])
                rows.append({"split": split, "pair": f"{a} / {b}", "prompt": prompt_for(*words), **counts})
                print(f"{prompt_for(*words)}: {counts} ({time.time() - started:.0f} s)")
    result = {"settings": {"model": args.model, "samples": args.samples, "seed": args.seed, "sampling": sampling},
              "machine": "2-core CPU, torch " + torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "rows": rows, "summary": summarise(rows)}
    atomic_write_text(Path(args.output), json.dumps(result, indent=2) + "\n")
    for s in result["summary"]:
        if s["pair"] == "all":
            lo, hi = s["agreement"]["ci95"]
            print(f"{s['split']}: clear readings agree with the exact judge {s['agreement']['rate']:.3f} ({lo:.3f}-{hi:.3f}) "
                  f"of {s['clear']}; unclear {s['unclear_share']:.3f} of {s['judged']} judged images")


if __name__ == "__main__":
    main()
