"""Print the README's mini-world tables from `benchmarks/results/world_baseline.json`.

    python scripts/world_tables.py [benchmarks/results/world_baseline.json]
"""

from __future__ import annotations

import json
import statistics
import sys


def base_table(d: dict) -> str:
    lines = ["| base model | prompts | relation | objects |", "|---|---|---|---|"]
    cos = d["eot_cosine"]
    for group, label in (("order-aware", f"order-aware pairs (EOT cosine of swapped prompts {cos['order_aware_mean']:.2f} on average)"),
                         ("collapsed", f"collapsed pairs, vertical relations (EOT cosine >= {cos['collapsed_min']:.5f})")):
        rows = [r for r in d["base"] if r["group"] == group]
        rel = statistics.mean(r["relation_accuracy"] for r in rows)
        obj = statistics.mean(r["object_accuracy"] for r in rows)
        lines.append(f"| {label} | {len(rows)} | {rel:.3f} | {obj:.3f} |")
    return "\n".join(lines)


def rectified_table(d: dict) -> str:
    rows = d["rectified"]
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    prompts = list(dict.fromkeys((r["prompt"], r["pair"]) for r in rows))
    lines = ["| prompt | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    for prompt, kind in prompts:
        cells = []
        for s in settings:
            r = next(x for x in rows if x["prompt"] == prompt and x["setting"] == s)
            cells.append(f"{r['relation_accuracy']:.2f} / {r['object_accuracy']:.2f}")
        lines.append(f"| {prompt}{' (unseen)' if kind == 'unseen' else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    data = json.load(open(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/world_baseline.json"))
    print(base_table(data), "", rectified_table(data), sep="\n")
