"""Where the working edit of a held-out pair lies, and whether anything a generalist learns points there.

It reads the rectifiers `benchmarks.generalist` trained (its `--work` folder) and compares their
EOT edits at alpha 1 (text only; images only with `--samples`). For a rectifier and a relation (A, R, B) the edit of
"A R B" is d1, that of "B R A" is d2; the direction part is (d1 - d2) / 2, what turns one order
into the other, and the shared part (d1 + d2) / 2. For each held-out relation it reports:
  - the size of the reference rectifier's edit (trained on that relation itself, the only edit
    known to work) against the EOT state's own norm;
  - the cosine of the reference's direction part with that of each generalist, with the text
    probe's additive direction v_R(A) - v_R(B) (fitted on the order-aware pairs, as in
    `benchmarks.direction_probe`), and with the same additive model fitted instead on the direction
    parts of the per-pair rectifiers of the train relations (what distilling per-pair edits into
    one per-object model would give; `joined` says whether the train pairs of that axis join A to B);
  - with `--other_work`, the cosine with the reference trained on other exemplars and another seed:
    whether per-pair training finds one edit or one of many;
  - with `--samples N`, which part of the working edit does the work: both orders of each held-out
    relation sampled N times with the reference's whole edit, its direction part alone and its
    shared part alone added at the EOT (exact judge, 95 % Wilson intervals; saved row by row, a
    rerun resumes).

    python -m benchmarks.edit_alignment [--work outputs/generalist] [--other_work DIR] [--samples 100]
    python -m benchmarks.edit_alignment --tables   # the README's tables from --output
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import judge_pair_images, pooled_rate
from benchmarks.direction_probe import TextModel, fit_models
from rrnet.atomic import atomic_write_text
from rrnet.backbones.loading import load_pipeline
from rrnet.errors import RRNetError
from rrnet.rectifier import add_at_eot, encode_prompt
from rrnet.rectifier_files import load_rectifier
from rrnet.tokens import tokenize_prompt
from rrnet.world.benchmark import pair_relations
from rrnet.world.exemplars import folder_name
from rrnet.generate import sample_arrays
from rrnet.world.record import load_recipe, shipped_backbone, world_sampling
from rrnet.world.vocab import object_names, prompt_for, relation_phrases

Words = tuple[str, str, str]
GENERALISTS = ("paper", "direction+w4", "role", "role+direction")
PARTS = ("whole", "direction", "shared")  # what of the reference's edit is added when sampling


def edit(pipe, rectifier, words: Words) -> torch.Tensor:
    """The rectifier's change to the prompt's EOT state at alpha 1 (triplet read from the prompt)."""
    prompt = prompt_for(*words)
    with torch.no_grad():
        embeds = rectifier.prompt_embeds(pipe, [prompt], alpha=1.0)
    return embeds[0, tokenize_prompt(pipe.tokenizer, prompt).eot_index] - encode_prompt(pipe, prompt).eot


def parts(pipe, rectifier, words: Words) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d1, d2, direction part, shared part) of the rectifier on A R B and B R A."""
    a, r, b = words
    d1, d2 = edit(pipe, rectifier, words), edit(pipe, rectifier, (b, r, a))
    return d1, d2, (d1 - d2) / 2, (d1 + d2) / 2


def rectifier_at(work: Path, name: str):
    folder = work / "rectifiers" / name
    if not (folder / "config.json").is_file():
        raise RRNetError(f"{folder}: not trained; run python -m benchmarks.generalist --eot_only --work {work} "
                         f"--variants {name.split('/')[0]} first")
    return load_rectifier(folder)


def joined(pairs: list[tuple[str, str]], a: str, b: str) -> bool:
    """Whether the pairs, as undirected edges, join a to b."""
    seen, frontier = {a}, [a]
    while frontier:
        x = frontier.pop()
        for p, q in pairs:
            for u, v in ((p, q), (q, p)):
                if u == x and v not in seen:
                    seen.add(v)
                    frontier.append(v)
    return b in seen


def cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(F.cosine_similarity(x, y, dim=0))


def distilled_row(model: TextModel, words: Words, direction: torch.Tensor, is_joined: bool) -> dict:
    """The additive model of the train relations' per-pair edits on a held-out relation; where no
    chain of train pairs joins A to B it says nothing about v_R(A) - v_R(B) (a least-squares
    minimum-norm guess), so no cosine is given."""
    if not is_joined:
        return {"joined": False, "norm": None, "cosine": None}
    predicted = model.predict([words])[0]
    return {"joined": True, "norm": float(predicted.norm()), "cosine": cosine(direction, predicted)}


def part_rows(pipe, sampling: dict, words: Words, direction: torch.Tensor, shared: torch.Tensor, samples: int,
              seed: int, done: dict) -> list[dict]:
    """Both orders of the relation sampled with each part of the reference's edit (the direction part
    enters "B R A" negated, as the reference's own edit of it does); rows already in `done` are kept."""
    a, r, b = words
    rows = []
    for prompt_words, sign in ((words, 1.0), ((b, r, a), -1.0)):
        enc = encode_prompt(pipe, prompt_for(*prompt_words))
        for part, delta in zip(PARTS, (shared + sign * direction, sign * direction, shared)):
            key = (prompt_for(*words), prompt_for(*prompt_words), part)
            if key not in done:
                embeds = add_at_eot(enc.hidden[None], torch.tensor([enc.tokens.eot_index]), delta[None])
                images = sample_arrays(pipe, embeds, samples, seed, sampling["num_inference_steps"],
                                       sampling["guidance_scale"])
                done[key] = {"reference_of": key[0], "prompt": key[1], "part": part, **judge_pair_images(images, prompt_words)}
            rows.append(done[key])
    return rows


def summarise_parts(rows: list[dict], recipe) -> list[dict]:
    """Per held-out pair and part: relation accuracy pooled over its prompts (both relations, both
    orders), the worst prompt, object accuracy."""
    out = []
    for a, b, axis in recipe.heldout_pairs:
        relations = {prompt_for(*w) for w in pair_relations([(a, b, axis)])}
        for part in PARTS:
            members = [r for r in rows if r["reference_of"] in relations and r["part"] == part]
            if members:
                out.append({"pair": f"{a} / {b}", "part": part, "prompts": len(members),
                            "relation": pooled_rate(members, lambda m: m["relation"]),
                            "objects": pooled_rate(members, lambda m: m["objects"]),
                            "worst_prompt_relation": min(m["relation"]["rate"] for m in members)})
    return out


def markdown_tables(result: dict) -> str:
    """The README's two tables: the edits' sizes and cosines per held-out relation, and the sampled parts."""
    def signed(x):
        return "n/a" if x is None else f"{x:+.2f}"

    names = list(result["rows"][0]["generalists"]) if result["rows"] else []
    lines = ["| relation (reference trained on it) | edit of A R B / B R A (EOT norm) | direction / shared part | "
             "other seed | text direction | distilled | " + " | ".join(names) + " |", "|---|" + "---|" * (5 + len(names))]
    for r in result["rows"]:
        ref, distilled = r["reference"], r["distilled"]
        lines.append(f"| {r['relation']} | {ref['edit_norms'][0]:.1f} / {ref['edit_norms'][1]:.1f} ({r['eot_norm']:.1f}) | "
                     f"{ref['direction_norm']:.1f} / {ref['shared_norm']:.1f} | "
                     f"{signed(r.get('other_reference', {}).get('cosine'))} | {signed(r['text_direction']['cosine'])} | "
                     f"{signed(distilled['cosine']) if distilled['joined'] else 'not joined'} | "
                     + " | ".join(signed(r["generalists"][n]["cosine"]) for n in names) + " |")
    summary = result.get("parts_summary", [])
    pairs = list(dict.fromkeys(s["pair"] for s in summary))
    if pairs:
        lines += ["", "| part of the reference's edit | " + " | ".join(pairs) + " | all prompts |", "|---|" + "---|" * (len(pairs) + 1)]
        for part in PARTS:
            members = [s for s in summary if s["part"] == part]
            pooled, objects = (pooled_rate(members, lambda s: s[key]) for key in ("relation", "objects"))
            lo, hi = pooled["ci95"]
            lines.append(f"| {part} | " + " | ".join(f"{s['relation']['rate']:.2f} ({s['worst_prompt_relation']:.2f}, "
                                                     f"{s['objects']['rate']:.2f})" for s in members)
                         + f" | {pooled['rate']:.3f} ({lo:.2f}-{hi:.2f}), objects {objects['rate']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(shipped_backbone()))
    ap.add_argument("--work", default="outputs/generalist", help="benchmarks.generalist's --work folder")
    ap.add_argument("--other_work", help="a second --work folder whose reference rectifiers were trained "
                    "with another --seed (other exemplars)")
    ap.add_argument("--generalists", nargs="*", default=list(GENERALISTS), choices=GENERALISTS)
    ap.add_argument("--samples", type=int, default=0, help="images per prompt and part of the reference's edit "
                    "(0: text only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", default="benchmarks/results/edit_alignment.json")
    ap.add_argument("--tables", action="store_true", help="print the README's tables from --output, then stop")
    args = ap.parse_args(argv)
    if args.tables:
        print(markdown_tables(json.loads(Path(args.output).read_text())))
        return
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    recipe = load_recipe(args.model)
    pipe = load_pipeline(args.model, device="cpu", progress=False)
    generalists = {name: rectifier_at(work, name) for name in args.generalists}
    out = Path(args.output)
    settings = {"model": str(args.model), "work": str(work), "other_work": args.other_work, "samples": args.samples,
                "seed": args.seed}
    earlier = json.loads(out.read_text()) if out.is_file() else {}
    done = {}
    if earlier.get("settings") == settings:  # resume the sampled rows of an interrupted run
        done = {(r["reference_of"], r["prompt"], r["part"]): r for r in earlier.get("parts", [])}

    with torch.no_grad():
        text_direction, _, _ = fit_models(pipe, recipe)
    train = pair_relations(recipe.train_pairs)
    distilled_parts = torch.stack([parts(pipe, rectifier_at(work, f"per-pair/{folder_name(*w)}"), w)[2] for w in train])
    distilled = TextModel("additive", object_names(), relation_phrases()).fit(train, distilled_parts)
    axis_pairs = {axis: [(a, b) for a, b, ax in recipe.train_pairs if ax == axis] for _, _, axis in recipe.heldout_pairs}

    rows, sampled = [], []
    sampling = world_sampling(args.model)
    result = {"settings": settings, "machine": "2-core CPU, torch " + torch.__version__}
    heldout = [(words, pair[2]) for pair in recipe.heldout_pairs for words in pair_relations([pair])]
    for words, axis in heldout:
        a, _, b = words
        d1, d2, direction, shared = parts(pipe, rectifier_at(work, f"reference/{folder_name(*words)}"), words)
        text = text_direction.predict([words])[0]
        row = {"relation": prompt_for(*words), "eot_norm": float(encode_prompt(pipe, prompt_for(*words)).eot.norm()),
               "reference": {"edit_norms": [float(d1.norm()), float(d2.norm())], "direction_norm": float(direction.norm()),
                             "shared_norm": float(shared.norm()), "cosine_of_the_two_edits": cosine(d1, d2)},
               "text_direction": {"norm": float(text.norm()), "cosine": cosine(direction, text)},
               "distilled": distilled_row(distilled, words, direction, joined(axis_pairs[axis], a, b)),
               "generalists": {}}
        for name, rectifier in generalists.items():
            g1, _, g_direction, _ = parts(pipe, rectifier, words)
            row["generalists"][name] = {"edit_norm": float(g1.norm()), "direction_norm": float(g_direction.norm()),
                                        "cosine": cosine(direction, g_direction)}
        if args.other_work:
            _, _, other, _ = parts(pipe, rectifier_at(Path(args.other_work), f"reference/{folder_name(*words)}"), words)
            row["other_reference"] = {"direction_norm": float(other.norm()), "cosine": cosine(direction, other)}
        rows.append(row)
        print(f"{row['relation']}: reference edit {d1.norm():.1f} / {d2.norm():.1f} (EOT {row['eot_norm']:.1f}); "
              f"direction-part cosine with text {row['text_direction']['cosine']:+.2f}, distilled "
              f"{'not joined' if row['distilled']['cosine'] is None else format(row['distilled']['cosine'], '+.2f')}, "
              + ", ".join(f"{n} {g['cosine']:+.2f}" for n, g in row["generalists"].items())
              + (f", other reference {row['other_reference']['cosine']:+.2f}" if args.other_work else ""))
        if args.samples:
            sampled += part_rows(pipe, sampling, words, direction, shared, args.samples, args.seed, done)
            for r in sampled[-2 * len(PARTS):]:
                print(f"  {r['prompt']}, {r['part']} edit: relation {r['relation']['rate']:.2f}, objects {r['objects']['rate']:.2f}")
        result.update(date=time.strftime("%Y-%m-%d"), rows=rows, parts=sampled,
                      parts_summary=summarise_parts(sampled, recipe))
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
