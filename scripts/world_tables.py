"""Print the README's mini-world tables from `benchmarks/results/world_baseline.json`.

    python scripts/world_tables.py [benchmarks/results/world_baseline.json] [--full]

Without --full: the summaries the README shows; with it, also every pair and prompt (the file
`benchmarks/results/world_baseline.md` is this output).
"""

from __future__ import annotations

import json
import statistics
import sys

AXIS = {"y": "vertical", "x": "horizontal"}
GROUPS = ("train", "heldout", "control", "order-aware")
GROUP_LABEL = {"train": "collapsed, train split", "heldout": "collapsed, held-out split", "control": "order-aware, control list",
               "order-aware": "order-aware, other pairs"}


def ci(r: dict) -> str:
    lo, hi = r["ci95"]
    return f"{r['rate']:.3f} ({lo:.2f}-{hi:.2f})"


def pooled(rows: list[dict], key: str) -> dict:
    k, n = sum(r[key]["successes"] for r in rows), sum(r[key]["n"] for r in rows)
    from rrnet.eval.stats import wilson_interval

    return {"rate": k / n, "successes": k, "n": n, "ci95": list(wilson_interval(k, n))}


def eot_table(d: dict) -> str:
    rows = d["parts"]["eot"]["pairs"]
    lines = ["| pairs | axis | pairs x phrases | EOT cosine of swapped prompts: mean | min | max |", "|---|---|---|---|---|---|"]
    for group in GROUPS:
        for axis in ("y", "x"):
            sel = [r["eot_cosine"] for r in rows if r["split"] == group and r["axis"] == axis]
            if sel:
                lines.append(f"| {GROUP_LABEL[group]} | {AXIS[axis]} | {len(sel)} | {statistics.mean(sel):.5f} | {min(sel):.5f} | {max(sel):.5f} |")
    s = d["parts"]["eot"]["scenes"]
    lines.append(f"| two-relation captions, collapsed relation swapped | both | {s['relations']} relations in all | "
                 f"{s['collapsed_mean']:.5f} | {s['collapsed_min']:.5f} | |")
    lines.append(f"| two-relation captions, order-aware relation swapped | both | | {s['order_aware_mean']:.3f} | | {s['order_aware_max']:.3f} |")
    return "\n".join(lines)


def base_summary(d: dict) -> str:
    rows = d["parts"]["base"]["prompts"]
    n = rows[0]["relation"]["n"]
    lines = [f"| base model, two-object prompts ({n} images each) | axis | prompts | relation | swapped | objects |",
             "|---|---|---|---|---|---|"]
    for group in GROUPS:
        for axis in ("y", "x"):
            sel = [r for r in rows if r["split"] == group and r["axis"] == axis]
            if sel:
                lines.append(f"| {GROUP_LABEL[group]} | {AXIS[axis]} | {len(sel)} | {ci(pooled(sel, 'relation'))} | "
                             f"{ci(pooled(sel, 'swapped'))} | {ci(pooled(sel, 'objects'))} |")
    aware = [r for r in rows if r["split"] in ("control", "order-aware")]
    worst = min(aware, key=lambda r: r["relation"]["rate"])
    lines.append(f"\nLowest order-aware prompt: \"{worst['prompt']}\" {ci(worst['relation'])}.")
    return "\n".join(lines)


def objects_table(d: dict) -> str:
    objs = d["parts"]["base"]["objects"]
    lines = ["| object | found in two-object images |", "|---|---|"]
    lines += [f"| {name} | {ci(r)} |" for name, r in objs.items()]
    return "\n".join(lines)


def scene_groups(d: dict) -> list[tuple[str, dict]]:
    """The caption groups of the `scenes` part (it also records its seconds and date)."""
    return [(k, v) for k, v in d["parts"]["scenes"].items() if isinstance(v, dict) and "prompts" in v]


def scenes_summary(d: dict) -> str:
    lines = ["| two-relation prompts (base model) | prompts | all relations correct | relation 1 | relation 2 | objects |",
             "|---|---|---|---|---|---|"]
    for group, value in scene_groups(d):
        rows = value["prompts"]
        rel = [pooled([{"x": r["per_relation"][k]} for r in rows], "x") for k in range(2)]
        lines.append(f"| built from {group} pairs | {len(rows)} | {ci(value['all_correct'])} | {ci(rel[0])} | {ci(rel[1])} | "
                     f"{ci(value['objects'])} |")
    return "\n".join(lines)


def rectified_table(d: dict) -> str:
    part = d["parts"]["rectify"]
    rows = part["rows"]
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    prompts = list(dict.fromkeys((r["prompt"], r["pair"]) for r in rows))
    lines = ["| prompt | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    for prompt, kind in prompts:
        cells = []
        for s in settings:
            r = next(x for x in rows if x["prompt"] == prompt and x["setting"] == s)
            cells.append(f"{r['relation']['rate']:.2f} / {r['objects']['rate']:.2f}")
        lines.append(f"| {prompt}{' (held-out)' if kind == 'held-out' else ''} | " + " | ".join(cells) + " |")
    t = part["training"]
    lines.append(f"\nRectifier: {t['recipe']} recipe, {t['epochs']} epochs, {t['exemplars']} exemplars per folder; "
                 f"EOT cosine of the two prompts {t['eot_cosine_base']:.4f} -> {t['eot_cosine_rectified']:.4f} at alpha 1.")
    return "\n".join(lines)


def full_tables(d: dict) -> str:
    out = ["| prompt | split | relation | swapped | objects |", "|---|---|---|---|---|"]
    for r in d["parts"]["base"]["prompts"]:
        out.append(f"| {r['prompt']} | {r['split']} | {ci(r['relation'])} | {ci(r['swapped'])} | {ci(r['objects'])} |")
    out += ["", "| two-relation prompt | collapsed | all correct | relation 1 | relation 2 | objects |", "|---|---|---|---|---|---|"]
    for _, value in scene_groups(d):
        for r in value["prompts"]:
            out.append(f"| {r['prompt']} | {r['collapsed']} | {ci(r['all_correct'])} | {ci(r['per_relation'][0])} | "
                       f"{ci(r['per_relation'][1])} | {ci(r['objects'])} |")
    return "\n".join(out)


def main(argv: list[str]) -> None:
    paths = [a for a in argv if not a.startswith("--")]
    data = json.load(open(paths[0] if paths else "benchmarks/results/world_baseline.json"))
    parts = data.get("parts", {})
    sections = []
    if "eot" in parts:
        sections.append(eot_table(data))
    if "base" in parts:
        sections += [base_summary(data), objects_table(data)]
    if "scenes" in parts:
        sections.append(scenes_summary(data))
    if "rectify" in parts:
        sections.append(rectified_table(data))
    if "--full" in argv and "base" in parts and "scenes" in parts:
        sections.append(full_tables(data))
    print("\n\n".join(sections))


if __name__ == "__main__":
    main(sys.argv[1:])
