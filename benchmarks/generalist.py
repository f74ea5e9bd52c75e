"""One rectifier for every relation: does it rectify object pairs it never saw?

Trains, on the mini world's `train` pairs with both relations of their axis (above and below, or
left of and right of; five rendered exemplars per folder), one rectifier per variant:
  paper          the paper's graph network, all train relations at once;
  antisymmetric  the same with the prompt adjustment g(A R B) - g(B R A);
  direction      antisymmetric, plus direction targets from the world's order-aware pairs (text only:
                 half the EOT difference of each prompt pair, see rrnet.direction_targets);
  paper+direction  the paper's graph with the same direction targets (which change matters);
  direction+floor  direction, with training timesteps drawn from the noisy end only (t >= 0.7 T, the
                 floor of the `fast` recipe, where a layout is decided);
  direction+w4, direction+w16  direction with the direction targets weighted 4 or 16 times as much
                 (--direction_weight sets the others');
  role           no graph network: the adjustment is f(A, R) - f(B, R), one vector per object in its
                 role (rrnet.rectifier's `role` adjuster), so a held-out pair gets what its objects
                 learned with their train partners; role+direction adds the direction targets;
  triplet        no graph network and no structure: the adjustment is f(A, R, B), an MLP of the
                 triplet's three word features (`rrnet train --triplet_mlp`), free to give each
                 relation its own edit;
and, as baselines, the per-pair rectifier of one train relation applied to other pairs
(`transfer`, the triplet given explicitly), per-pair rectifiers trained on each held-out
relation itself (`reference`, the only rows trained on a held-out pair's rendered images), per-pair
rectifiers with the same recipe trained on self-taught folders of each held-out relation
(`self-taught`: the base model's own samples of the prompt and its swap, labelled by its own
single-object captions, rrnet.self_teach; no rendered image of the pair), one `triplet`
rectifier with the generalists' recipe trained on the self-taught folders of every collapsed
relation, train and held out (`self-taught-one`: one network and no rendered image at all, but
not zero-shot, since it trains on the held-out pairs' own samples), and per-pair
rectifiers trained on each train relation with the generalists' recipe (`per-pair`: the same
epochs, so each relation gets as many pair steps as inside a generalist; `per-pair+floor` with the
timestep floor of `direction+floor`).
Then samples every prompt of the chosen splits (both relations of each pair's axis, both object
orders) with the base model and each variant at each alpha, judges every image exactly, and
reports relation and object accuracy with 95 % Wilson intervals. The `single` split is the world's
single-object captions ("a photo of a red circle"), judged for the object alone: a generalist must
leave prompts without a relation as they are. The generalists read the
triplet from the prompt (no triplet is passed). Rows are saved as they finish; a rerun resumes.

    python -m benchmarks.generalist [--samples 100] [--splits heldout train control single] [--alpha 0.4 0.8 1.2]
    python -m benchmarks.generalist --merge A.json B.json   # pool runs made side by side into --output
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.common import (COLLAPSE_GATE, grouped_rows, judge_object, judge_prompt, keyed_union,
                               merge_result_files, pooled_rate, sampled_images)
from rrnet.atomic import atomic_write_text
from rrnet.backbones.loading import load_pipeline
from rrnet.data import load_relations
from rrnet.rectifier_files import load_rectifier
from rrnet.self_teach import self_taught_folder
from rrnet.train import TrainConfig, rectifier_finished, train_rectifier
from rrnet.world.benchmark import direction_prompt_pairs, order_aware_pairs, pair_relations, split_pairs
from rrnet.world.exemplars import folder_name, write_relation_folder
from rrnet.world.record import load_recipe, shipped_backbone, world_sampling
from rrnet.world.vocab import object_names, object_prompt, prompt_for, relation_phrases

FLOOR = 0.7  # timestep floor of the +floor variants: t >= 0.7 T, as in the `fast` recipe
GENERALISTS = {"paper": ({}, False), "antisymmetric": ({"antisymmetric": True}, False),
               "direction": ({"antisymmetric": True}, True), "paper+direction": ({}, True),
               "direction+floor": ({"antisymmetric": True, "timestep_min": FLOOR}, True),
               "direction+w4": ({"antisymmetric": True, "direction_weight": 4.0}, True),
               "direction+w16": ({"antisymmetric": True, "direction_weight": 16.0}, True),
               "role": ({"adjuster": "role"}, False), "role+direction": ({"adjuster": "role"}, True),
               "triplet": ({"adjuster": "triplet"}, False)}
PER_PAIR = {"per-pair": {}, "per-pair+floor": {"timestep_min": FLOOR}}  # per train relation, the generalists' recipe
# the `triplet` generalist's recipe, on the self-taught folders of every collapsed relation (train and held out)
TAUGHT_ONE = GENERALISTS["triplet"][0]
VARIANTS = ("base", *GENERALISTS, "transfer", "reference", "self-taught", "self-taught-one", *PER_PAIR)
ONE_RECTIFIER = (*GENERALISTS, "self-taught-one")  # one rectifier for every prompt, the triplet read from it
TRANSFER_FROM = ("red circle", "above", "blue square")
RELATION_SPLITS = ("heldout", "train", "control")
SPLITS = (*RELATION_SPLITS, "single")  # single: single-object captions, no relation


# what identifies an entry of the result file: a judged row, an EOT check, a collapse-gate check
def row_key(r: dict) -> tuple:
    return r["variant"], r["alpha"], r["prompt"]


def check_key(e: dict) -> tuple:
    return e["split"], e["variant"]


def gate_key(g: dict) -> tuple:
    return g["split"], g["variant"], g["alpha"]


def exemplar_folder(root: Path, words: tuple[str, str, str], recipe, args) -> Path:
    """The rendered exemplar folder of a relation, written once: a folder is swapped in complete
    (its index.json last), so one that exists is reused by later and side-by-side runs."""
    folder = root / folder_name(*words)
    if (folder / "index.json").is_file():
        return folder
    return write_relation_folder(root, *words, n_images=args.exemplars, size=recipe.size, seed=args.seed)


def self_taught_exemplars(pipe, root: Path, words: tuple[str, str, str], args) -> Path:
    """The self-taught folder of a relation (drawn and labelled by the base model), written once."""
    folder = root / folder_name(*words)
    if (folder / "index.json").is_file():
        return folder
    sampling = world_sampling(args.model)
    return self_taught_folder(pipe, *words, folder, n_images=args.exemplars, seed=args.seed,
                              steps=sampling["num_inference_steps"], guidance_scale=sampling["guidance_scale"])


def labeller_check(pipe, work: Path, recipe, args) -> list[dict]:
    """How often the self-taught folders' readings agree with the exact judge: every sample drawn
    for a folder is drawn again (same prompt and seed) and judged."""
    from benchmarks.common import rate
    from benchmarks.self_teach_labels import reading_counts
    from rrnet.self_teach import RECORD_FILE
    from rrnet.world.judge import judge_image

    sampling = world_sampling(args.model)
    out = []
    for words in pair_relations(recipe.heldout_pairs):
        folder = work / "data" / "self-taught" / folder_name(*words)
        if not (folder / RECORD_FILE).is_file():
            continue
        record = json.loads((folder / RECORD_FILE).read_text())
        verdicts = [judge_image(sampled_images(pipe, r["prompt"], None, None, None, 1, r["seed"],
                                               sampling["num_inference_steps"], sampling["guidance_scale"])[0],
                                *words).verdict for r in record["readings"]]
        counts = reading_counts([r["layout"] for r in record["readings"]], verdicts)
        out.append({"relation": list(words), "samples": record["samples"], "kept": record["kept"],
                    "unclear": record["unclear"], "judged": counts["judged"],
                    "agreement": rate(counts["agree"], counts["clear"]) if counts["clear"] else None})
    return out


def train_variants(pipe, recipe, variants, work: Path, args) -> dict:
    """Train (or reuse) every rectifier the variants need; returns {name: folder}."""
    model = str(args.model)
    train_dirs = []
    for a, relation, b in pair_relations(recipe.train_pairs):
        train_dirs.append(exemplar_folder(work / "data" / "train", (a, relation, b), recipe, args))
    jobs: dict[str, tuple[list[Path], TrainConfig, list | None]] = {}
    base = dict(epochs=args.epochs, learning_rate=args.learning_rate, seed=args.seed,
                relations_per_step=args.relations_per_step, direction_weight=args.direction_weight)
    directions = direction_prompt_pairs(order_aware_pairs(recipe))
    for name, (extra, uses_directions) in GENERALISTS.items():
        if name in variants:
            jobs[name] = (train_dirs, TrainConfig(**{**base, **extra}), directions if uses_directions else None)
    if "transfer" in variants:
        source = work / "data" / "train" / folder_name(*TRANSFER_FROM)
        jobs["transfer"] = ([source], TrainConfig(seed=args.seed), None)
    if "reference" in variants:
        for a, relation, b in pair_relations(recipe.heldout_pairs):
            folder = exemplar_folder(work / "data" / "heldout", (a, relation, b), recipe, args)
            jobs[f"reference/{folder.name}"] = ([folder], TrainConfig(seed=args.seed), None)
    if "self-taught" in variants:
        for words in pair_relations(recipe.heldout_pairs):
            folder = self_taught_exemplars(pipe, work / "data" / "self-taught", words, args)
            jobs[f"self-taught/{folder.name}"] = ([folder], TrainConfig(seed=args.seed), None)
    if "self-taught-one" in variants:
        taught = [self_taught_exemplars(pipe, work / "data" / "self-taught", words, args)
                  for words in pair_relations(recipe.collapsed_pairs)]
        jobs["self-taught-one"] = (taught, TrainConfig(**{**base, **TAUGHT_ONE}), None)
    for name, extra in PER_PAIR.items():
        if name in variants:
            for folder in train_dirs:
                jobs[f"{name}/{folder.name}"] = ([folder], TrainConfig(**base, **extra), None)
    folders = {}
    for name, (data, config, pairs) in jobs.items():
        out = work / "rectifiers" / name
        if not rectifier_finished(out):
            started = time.time()
            train_rectifier(pipe, load_relations(data), config, out, model_id=model, progress=False,
                            direction_pairs=pairs)
            print(f"trained {name} on {len(data)} relation(s) in {time.time() - started:.0f} s")
        folders[name] = out
    return folders


def prompts_of(recipe, splits) -> list[tuple[str, str, str, str]]:
    """(split, A, relation, B) for both object orders of each pair's relations; (single, X, "", "")
    for each object's single-object caption."""
    out = []
    for split in splits:
        if split == "single":
            out += [("single", obj, "", "") for obj in object_names()]
            continue
        for a, relation, b in pair_relations(split_pairs(recipe, [split])):
            out += [(split, a, relation, b), (split, b, relation, a)]
    return out


def eot_separation(pipe, recipe, rectifiers: dict) -> list[dict]:
    """Per split and generalist: cosine of the two object orders' rectified EOT vectors at alpha 1
    (1.0 = the text encoder's collapse left as it is), over every relation of the split. Text only:
    whether a generalist separates a pair at all, before asking whether it separates it the right way."""
    import torch.nn.functional as F

    from rrnet.tokens import tokenize_prompt

    def eot(prompt: str, rectifier, alpha: float) -> torch.Tensor:
        with torch.no_grad():
            embeds = rectifier.prompt_embeds(pipe, [prompt], alpha=alpha)
        return embeds[0, tokenize_prompt(pipe.tokenizer, prompt).eot_index]

    out = []
    for split in RELATION_SPLITS:
        relations = pair_relations(split_pairs(recipe, [split]))
        for name in ONE_RECTIFIER:
            if name not in rectifiers or not relations:
                continue
            cosines = [F.cosine_similarity(*(eot(prompt_for(x, r, y), rectifiers[name], 1.0) for x, y in ((a, b), (b, a))),
                                           dim=0).item() for a, r, b in relations]
            out.append({"split": split, "variant": name, "relations": len(relations),
                        "mean": sum(cosines) / len(cosines), "min": min(cosines), "max": max(cosines)})
    return out


def gate_check(pipe, recipe, rectifiers: dict, alphas: list[float]) -> list[dict]:
    """Per split and generalist: how many prompts `collapse_gate` leaves at the base model's
    embeddings and how many it edits exactly as the ungated rectifier does (text only). Where every
    prompt of a split equals base (or ungated) bit for bit, so do its images and judged numbers."""
    out = []
    for split in RELATION_SPLITS:
        prompts = [prompt_for(a, r, b) for _, a, r, b in prompts_of(recipe, [split])]
        for name in ONE_RECTIFIER:
            if name not in rectifiers or not prompts:
                continue
            rectifier = rectifiers[name]
            with torch.no_grad():
                base = [rectifier.prompt_embeds(pipe, [prompt], alpha=0.0) for prompt in prompts]
                for alpha in alphas:
                    same_base = same_ungated = 0
                    for prompt, unedited in zip(prompts, base):
                        gated = rectifier.prompt_embeds(pipe, [prompt], alpha=alpha, collapse_gate=COLLAPSE_GATE)
                        same_base += torch.equal(gated, unedited)
                        same_ungated += torch.equal(gated, rectifier.prompt_embeds(pipe, [prompt], alpha=alpha))
                    out.append({"split": split, "variant": name, "gate": COLLAPSE_GATE, "alpha": alpha,
                                "prompts": len(prompts), "equal_to_base": same_base, "equal_to_ungated": same_ungated})
    return out


def summarise(rows: list[dict]) -> list[dict]:
    """Pooled rates per split, variant and alpha, with the worst prompt."""
    out = []
    for (split, variant, alpha), members in grouped_rows(rows, "split", SPLITS, VARIANTS):
        relational = split in RELATION_SPLITS
        out.append({"split": split, "variant": variant, "alpha": alpha, "prompts": len(members),
                    "relation": pooled_rate(members, lambda m: m["relation"]) if relational else None,
                    "objects": pooled_rate(members, lambda m: m["objects"]),
                    "worst_prompt_relation": min(m["relation"]["rate"] for m in members) if relational else None})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(shipped_backbone()))
    ap.add_argument("--samples", type=int, default=100, help="images per prompt and setting")
    ap.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--alpha", type=float, nargs="+", default=[0.4, 0.8, 1.2])
    ap.add_argument("--epochs", type=int, default=100, help="the generalists' (per-pair rows: the official 100)")
    ap.add_argument("--learning_rate", type=float, default=1e-3, help="the generalists' (per-pair rows use the official recipe)")
    ap.add_argument("--relations_per_step", type=int, default=8)
    ap.add_argument("--direction_weight", type=float, default=1.0)
    ap.add_argument("--exemplars", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="outputs/generalist", help="exemplars and trained rectifiers")
    ap.add_argument("--output", default="benchmarks/results/generalist.json")
    ap.add_argument("--eot_only", action="store_true", help="only the text-side checks (rectified EOT cosines, "
                    "what the collapse gate keeps), no images")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="pool the rows of result files measured with the same "
                    "settings (runs made side by side) into --output, then stop")
    ap.add_argument("--tables", action="store_true", help="print the README's tables from --output, then stop")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.tables:
        print(markdown_tables(json.loads(Path(args.output).read_text()), load_recipe(args.model)))
        return
    if args.merge:
        merge_results([Path(p) for p in args.merge], Path(args.output))
        return

    out, work = Path(args.output), Path(args.work)
    recipe, sampling = load_recipe(args.model), world_sampling(args.model)
    steps, guidance = sampling["num_inference_steps"], sampling["guidance_scale"]
    result = json.loads(out.read_text()) if out.is_file() else {}
    settings = {"model": str(args.model), "samples": args.samples, "seed": args.seed, "sampling": sampling,
                "epochs": args.epochs, "learning_rate": args.learning_rate, "exemplars": args.exemplars,
                "relations_per_step": args.relations_per_step, "direction_weight": args.direction_weight}
    if result.get("settings", settings) != settings:
        raise SystemExit(f"{out} was measured with other settings; move it away to measure again")
    result["settings"] = settings
    result["machine"] = "2-core CPU, torch " + torch.__version__
    rows = {row_key(r): r for r in result.get("rows", [])}

    pipe = load_pipeline(args.model, device="cpu", progress=False)
    folders = train_variants(pipe, recipe, args.variants, work, args)
    rectifiers = {name: load_rectifier(folder) for name, folder in folders.items()}
    # a run with fewer variants keeps what earlier runs recorded for the others
    result["training"] = {**result.get("training", {}),
                          **{name: json.loads((folder / "train_log.jsonl").read_text().splitlines()[-1])
                             for name, folder in folders.items()}}
    if "self-taught" in args.variants:
        result["self_taught"] = labeller_check(pipe, work, recipe, args)
        for e in result["self_taught"]:
            agreement = e["agreement"]["rate"] if e["agreement"] else float("nan")
            print(f"self-taught {' '.join(e['relation'])}: kept {e['kept']} of {e['samples']} samples "
                  f"({e['unclear']} unclear), readings agree with the exact judge {agreement:.3f}")
    separation = eot_separation(pipe, recipe, rectifiers)
    result["eot_cosine"] = keyed_union(result.get("eot_cosine", []), separation, check_key)
    for e in separation:
        print(f"{e['split']:8s} {e['variant']}: rectified EOT cosine of the two orders, alpha 1: "
              f"mean {e['mean']:.4f} (min {e['min']:.4f}, max {e['max']:.4f}) over {e['relations']} relations")
    gates = gate_check(pipe, recipe, rectifiers, args.alpha)
    result["collapse_gate"] = keyed_union(result.get("collapse_gate", []), gates, gate_key)
    for g in gates:
        print(f"{g['split']:8s} {g['variant']} alpha={g['alpha']:g}, collapse_gate {g['gate']}: of {g['prompts']} prompts "
              f"{g['equal_to_base']} keep the base embeddings, {g['equal_to_ungated']} are edited as without the gate")
    if args.eot_only:
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        return
    started = time.time()
    for split, a, relation, b in prompts_of(recipe, args.splits):
        prompt = object_prompt(a) if split == "single" else prompt_for(a, relation, b)
        settings_of = []
        for variant in args.variants:
            if variant == "base":
                settings_of.append(("base", None, None, None))
            elif split == "single" and variant not in ONE_RECTIFIER:
                continue  # per-pair rectifiers are only ever given prompts of their own triplet
            elif variant in PER_PAIR:
                name = f"{variant}/{folder_name(*sorted_words(a, relation, b, recipe))}"
                if name in rectifiers:  # train relations only
                    settings_of += [(variant, alpha, rectifiers[name], None) for alpha in args.alpha]
            elif variant == "transfer":
                settings_of += [(variant, alpha, rectifiers["transfer"], (a, relation, b)) for alpha in args.alpha]
            elif variant in ("reference", "self-taught"):
                name = f"{variant}/{folder_name(*sorted_words(a, relation, b, recipe))}"
                if name in rectifiers:  # held-out relations only
                    settings_of += [(variant, alpha, rectifiers[name], None) for alpha in args.alpha]
            else:
                settings_of += [(variant, alpha, rectifiers[variant], None) for alpha in args.alpha]
        for variant, alpha, rectifier, triplet in settings_of:
            key = (variant, alpha, prompt)
            if key in rows:
                continue
            judged = (judge_object(pipe, a, alpha, rectifier, args.samples, args.seed, steps, guidance) if split == "single"
                      else judge_prompt(pipe, (a, relation, b), alpha, rectifier, triplet, args.samples, args.seed, steps, guidance))
            row = {"split": split, "variant": variant, "alpha": alpha, "prompt": prompt, **judged}
            rows[key] = row
            result["rows"] = list(rows.values())
            result["summary"] = summarise(result["rows"])
            result["date"] = time.strftime("%Y-%m-%d")
            atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        print(f"{prompt}: done ({time.time() - started:.0f} s)")
    for s in summarise(list(rows.values())):
        alpha = "" if s["alpha"] is None else f" alpha={s['alpha']:g}"
        relation = "" if s["relation"] is None else \
            f"relation {s['relation']['rate']:.3f} (worst prompt {s['worst_prompt_relation']:.2f}), "
        print(f"{s['split']:8s} {s['variant']}{alpha}: {relation}objects {s['objects']['rate']:.3f}")


def markdown_tables(result: dict, recipe) -> str:
    """The README's tables: per split, one row per variant and alpha, relation accuracy pooled over
    each pair's prompts (worst prompt and object accuracy in brackets) and over the whole split."""
    lines = []
    for split in RELATION_SPLITS:
        rows = [r for r in result.get("rows", []) if r["split"] == split]
        if not rows:
            continue
        pairs = [(a, b) for a, b, _ in split_pairs(recipe, [split])]

        def of_pair(r: dict, a: str, b: str) -> bool:
            return any(r["prompt"] in (prompt_for(a, ph, b), prompt_for(b, ph, a)) for ph in relation_phrases())

        lines += [f"{split}:", "", "| rectifier | " + " | ".join(f"{a} / {b}" for a, b in pairs) + f" | all {split} prompts |",
                  "|---|" + "---|" * (len(pairs) + 1)]
        for (_, variant, alpha), members in grouped_rows(rows, "split", SPLITS, VARIANTS):
            cells = []
            for a, b in pairs:
                mine = [m for m in members if of_pair(m, a, b)]
                if not mine:
                    cells.append("")
                    continue
                rel, obj = (pooled_rate(mine, lambda m: m[key]) for key in ("relation", "objects"))
                worst = min(m["relation"]["rate"] for m in mine)
                cells.append(f"{rel['rate']:.2f} ({worst:.2f}, {obj['rate']:.2f})")
            rel, obj = (pooled_rate(members, lambda m: m[key]) for key in ("relation", "objects"))
            lo, hi = rel["ci95"]
            label = variant if alpha is None else f"{variant}, alpha {alpha:g}"
            lines.append(f"| {label} | " + " | ".join(cells) +
                         f" | {rel['rate']:.3f} ({lo:.2f}-{hi:.2f}), objects {obj['rate']:.3f} ({len(members)} prompts) |")
        lines.append("")
    return "\n".join(lines)


def merge_results(paths: list[Path], out: Path) -> None:
    """Pool runs of this benchmark made side by side: rows, training logs, EOT and collapse-gate checks."""
    merge_result_files(paths, out, {"rows": row_key, "eot_cosine": check_key, "collapse_gate": gate_key,
                                    "self_taught": lambda e: tuple(e["relation"])}, summarise)


def sorted_words(a: str, relation: str, b: str, recipe) -> tuple[str, str, str]:
    """The (A, R, B) a relation folder was written for: the recipe's pair order, whichever order the prompt has."""
    for p, q, _ in recipe.heldout_pairs + recipe.train_pairs + recipe.control_pairs:
        if {p, q} == {a, b}:
            return p, relation, q
    return a, relation, b


if __name__ == "__main__":
    main()
