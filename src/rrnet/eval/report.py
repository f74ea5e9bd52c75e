"""Evaluation reports: `results.json`, a Table-1-shaped Markdown table, and the alpha trade-off plot.

Benchmarks with scenes (prompts stating several relations) get their own tables: the
all-relations-correct rate, per-relation accuracy and object accuracy per method setting, per scene
and per prompt; the one-relation tables are unchanged and shown when the benchmark has relations.

Every number in the table and the plot is read from the results dictionary that is written to
`results.json`, so the three files cannot disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rrnet.atomic import atomic_write, atomic_write_text
from rrnet.eval.metrics import ACTION, POSITION

RESULTS_NAME, TABLE_NAME, PLOT_NAME = "results.json", "table.md", "tradeoff.png"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def cell(stats: dict[str, Any] | None, key: str) -> str:
    """"62.0 (55.1–68.4)": a rate in percent with its interval, or "–" when nothing was judged."""
    if not stats or stats.get(key) is None:
        return "–"
    low, high = stats[f"{key}_ci"]
    return f"{percent(stats[key])} ({percent(low)}–{percent(high)})"


def table_markdown(results: dict[str, Any]) -> str:
    """Rows: methods and alphas; columns per judge: Position(judge), Action(judge), OGA(judge); then FID."""
    labels = [judge["label"] for judge in results["judges"]]
    header = ["Method"]
    for label in labels:
        header += [f"Position({label})", f"Action({label})", f"OGA({label})"]
    header.append("FID")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results["rows"]:
        cells = [row["label"]]
        for label in labels:
            judged = row["judged"].get(label, {})
            categories = judged.get("categories", {})
            cells += [cell(categories.get(POSITION), "relation_accuracy"), cell(categories.get(ACTION), "relation_accuracy"),
                      cell(judged.get("overall"), "oga")]
        cells.append("–" if row["fid"] is None else f"{row['fid']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _items_by_method(title: str, kind: str, items: list[dict], rows: list[dict], cell) -> str:
    """One table: a row per item (relation or scene: name, category), a column per method setting;
    `cell(row, item)` is the cell's text."""
    header = [kind, "Category"] + [row["label"] for row in rows]
    lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for item in items:
        lines.append("| " + " | ".join([item["name"], item["category"], *(cell(row, item) for row in rows)]) + " |")
    return "\n".join(lines) + "\n"


def relations_markdown(results: dict[str, Any]) -> str:
    """Relation accuracy per relation, both prompts pooled, each pooled row followed by one row per
    prompt (direction) right beneath it: a pooled rate can hide one direction that fails. Columns:
    method settings; one table per judge."""
    parts = []
    rows = results["rows"]
    for judge in results["judges"]:
        label = judge["label"]
        header = ["Relation / prompt", "Category"] + [row["label"] for row in rows]
        lines = [f"Relation accuracy per relation (both prompts pooled) and per prompt, judge {label} (%):", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for relation in results["relations"]:
            pooled = [row["judged"].get(label, {}).get("relations", {}).get(relation["name"]) for row in rows]
            lines.append("| " + " | ".join([f"**{relation['name']}**", relation["category"],
                                            *(percent(st["relation_accuracy"]) if st else "–" for st in pooled)]) + " |")
            for prompt in (relation["prompt"], relation["swapped_prompt"]):
                stats = [row["judged"].get(label, {}).get("prompts", {}).get(prompt) for row in rows]
                lines.append("| " + " | ".join([f"↳ {prompt}", "",
                                                *(percent(st["relation_accuracy"]) if st else "–" for st in stats)]) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def scene_stats(row: dict[str, Any], label: str) -> dict[str, Any]:
    """The scene numbers of one row under one judge (empty when the judge has none)."""
    return row["judged"].get(label, {}).get("scenes", {})


def scenes_table_markdown(results: dict[str, Any]) -> str:
    """Rows: methods and alphas; columns per judge: all relations correct, per-relation accuracy and
    object accuracy over every scene prompt (with intervals); FID when the benchmark has no relations
    (otherwise it is in the relation table)."""
    labels = [judge["label"] for judge in results["judges"]]
    with_fid = not results["relations"]
    header = ["Method"]
    for label in labels:
        header += [f"All correct({label})", f"Per relation({label})", f"Objects({label})"]
    if with_fid:
        header.append("FID")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results["rows"]:
        cells = [row["label"]]
        for label in labels:
            overall = scene_stats(row, label).get("overall")
            cells += [cell(overall, "all_correct_rate"), cell(overall, "relation_accuracy"), cell(overall, "object_accuracy")]
        if with_fid:
            cells.append("–" if row["fid"] is None else f"{row['fid']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def scenes_detail_markdown(results: dict[str, Any]) -> str:
    """Per scene (its prompts pooled) the all-correct rate, and per prompt the all-correct rate with
    each relation's accuracy, one pair of tables per judge: a pooled row can hide a relation that fails."""
    parts = []
    rows = results["rows"]
    for judge in results["judges"]:
        label = judge["label"]

        def cell(row: dict, scene: dict) -> str:
            stats = scene_stats(row, label).get("scenes", {}).get(scene["name"])
            return percent(stats["all_correct_rate"]) if stats else "–"

        parts.append(_items_by_method(f"All relations correct per scene (its prompts pooled), judge {label} (%):",
                                      "Scene", results["scenes"], rows, cell))
        header = ["Prompt"] + [row["label"] for row in rows]
        lines = [f"Per prompt, judge {label} (%): all relations correct, then each relation's accuracy in prompt order:", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for scene in results["scenes"]:
            for side, prompt in enumerate([scene["prompt"], *scene["swapped_prompts"]]):
                cells = [prompt]
                for row in rows:
                    stats = next((p for p in scene_stats(row, label).get("prompts", [])
                                  if p["scene"] == scene["name"] and p["side"] == side), None)
                    cells.append("–" if not stats else f"{percent(stats['all_correct_rate'])} ("
                                 + ", ".join(percent(r["accuracy"]) for r in stats["per_relation"]) + ")")
                lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def summary_markdown(results: dict[str, Any]) -> str:
    """The headline tables: the Table-1 shape for relations, the scene table for scenes."""
    parts = []
    if results["relations"] or not results.get("scenes"):
        parts.append(table_markdown(results))
    if results.get("scenes"):
        parts.append(scenes_table_markdown(results))
    return "\n".join(parts)


def report_markdown(results: dict[str, Any]) -> str:
    gen = results["generation"]
    fid = results.get("fid")
    fid_line = (
        f"FID against `{fid['reference']}` with {fid['weights']} ({fid['extractor']})." if fid
        else "FID not computed (no reference folder given)."
    )
    kinds = [(j["label"], j.get("judge", "")) for j in results["judges"]]
    judges = ", ".join(label if kind in ("", label) else f"{label} ({kind})" for label, kind in kinds)
    unreadable = sum(row["judged"][j["label"]]["overall"]["unreadable"] for row in results["rows"] for j in results["judges"])
    unreadable += sum(scene_stats(row, j["label"]).get("overall", {}).get("unreadable", 0)
                      for row in results["rows"] for j in results["judges"])
    scenes = results.get("scenes") or []
    members = f"{len(results['relations'])} relations"
    if scenes:
        prompts = sum(1 + len(scene["swapped_prompts"]) for scene in scenes)
        members += f" and {len(scenes)} scenes ({prompts} prompts: each scene's prompt and one per relation swapped)"
    lines = [
        "# Relation evaluation", "",
        (f"Model `{results['model']}`, benchmark `{results.get('benchmark')}`: {members}, "
        f"{gen['num_images']} images per prompt (seeds {gen['seed']}..{gen['seed'] + gen['num_images'] - 1}), "
        f"{gen['steps']} steps, guidance {gen['guidance_scale']:g}. Judges: {judges}."),
        f"Relation accuracy and OGA in %, with {results['interval']} intervals. {fid_line}",
        f"Unreadable judge answers (counted as wrong): {unreadable}.", "",
    ]
    if results["relations"] or not scenes:
        lines += [table_markdown(results), relations_markdown(results)]
    if scenes:
        lines += ["## Scenes (prompts stating several relations)", "",
                  "All correct: every relation of the prompt drawn its way round; per relation: each relation of each "
                  "image counted on its own; objects: every named object found.", "",
                  scenes_table_markdown(results), scenes_detail_markdown(results)]
    return "\n".join(lines)


def plot_tradeoff(results: dict[str, Any], path: str | Path) -> Path:
    """Relation accuracy (each judge) and FID against alpha; settings without alpha as flat lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_fid = any(row["fid"] is not None for row in results["rows"])
    fig, axes = plt.subplots(1, 2 if has_fid else 1, figsize=(13 if has_fid else 7.5, 4.2), squeeze=False)
    methods = list(dict.fromkeys(row["method"] for row in results["rows"]))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    colour = {m: "black" if m == "base" else cycle[k % len(cycle)] for k, m in enumerate(methods)}
    acc_ax = axes[0][0]
    scenes = bool(results.get("scenes"))
    for j, judge in enumerate(results["judges"]):
        label = judge["label"]
        for method in methods:
            rows = [r for r in results["rows"] if r["method"] == method and label in r["judged"]]
            name = method if len(results["judges"]) == 1 else f"{method} · {label}"
            if results["relations"] or not scenes:
                values = [(r["setting"], r["judged"][label]["overall"]["relation_accuracy"]) for r in rows]
                _draw(acc_ax, values, name, colour[method], styles[j % len(styles)])
            if scenes:  # scenes: the all-relations-correct rate, dotted beside the relation line
                values = [(r["setting"], scene_stats(r, label).get("overall", {}).get("all_correct_rate")) for r in rows]
                _draw(acc_ax, values, f"{name} · scenes all correct", colour[method], styles[(j + 2) % len(styles)])
    acc_ax.set(xlabel="alpha", ylabel="relation accuracy", ylim=(0, 1.02), title="Relation accuracy vs alpha")
    if has_fid:
        fid_ax = axes[0][1]
        for method in methods:
            values = [(r["setting"], r["fid"]) for r in results["rows"] if r["method"] == method and r["fid"] is not None]
            _draw(fid_ax, values, method, colour[method], "-")
        fid_ax.set(xlabel="alpha", ylabel="FID", title="FID vs alpha")
    axes[0][-1].legend(*acc_ax.get_legend_handles_labels(), fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def _draw(ax, values: list[tuple[float | None, float | None]], label: str, color: str, style: str) -> None:
    """A line over alpha, or a flat dashed line (with a marker at the left edge) for a setting without alpha."""
    points = [(x, y) for x, y in values if x is not None and y is not None]
    flat = [y for x, y in values if x is None and y is not None]
    if points:
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", linestyle=style, color=color, label=label)
    for y in flat:
        ax.axhline(y, linestyle="--" if style == "-" else style, linewidth=1.2, color=color, label=label)


def write_report(results: dict[str, Any], output_dir: str | Path) -> dict[str, Path]:
    """Write results.json, table.md (report) and tradeoff.png into `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "results": atomic_write_text(output_dir / RESULTS_NAME, json.dumps(results, indent=2) + "\n"),
        "table": atomic_write_text(output_dir / TABLE_NAME, report_markdown(results)),
        "plot": plot_tradeoff(results, output_dir / PLOT_NAME),
    }
    return paths
