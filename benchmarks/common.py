"""Shared set-up for benchmarks: a random SD-shaped backbone and a relation folder at its size."""

from __future__ import annotations

import resource
import tempfile
from collections.abc import Callable
from pathlib import Path

from rrnet.backbones.clip_vocab import clip_tokenizer
from rrnet.backbones.shapes import SHAPES, build_pipeline_from_shape
from rrnet.data import load_relation
from rrnet.world.exemplars import write_relation_folder

# `collapse_gate` of the world benchmarks: a relation is edited only if the text encoder gives its two
# orders EOT states at least this similar (the world's collapsed pairs ~1.0, order-aware <= 0.69)
COLLAPSE_GATE = 0.99


def benchmark_pipeline(shape_name: str, device: str = "cpu", dtype=None):
    """Random-weight pipeline of a named shape (timings do not depend on weight values)."""
    pipe = build_pipeline_from_shape(SHAPES[shape_name], clip_tokenizer())
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype) if dtype is not None else pipe.to(device)


def benchmark_relation(resolution: int, n_images: int = 3):
    """A mini-world relation folder rendered at the backbone's resolution."""
    root = Path(tempfile.mkdtemp(prefix="rrnet-bench-"))
    folder = write_relation_folder(root, "red circle", "above", "blue square", n_images=n_images, size=resolution, seed=0)
    return load_relation(folder)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fast_stepper(pipe, spec, config) -> Callable[[int], None]:
    """Set up `rrnet.train` for `spec`; the returned call runs pair step i (loss, backward, optimiser)."""
    from rrnet.train import PAIR_STEPS, pair_step_loss, setup_training

    rect, prepared, sched, opt, gen = setup_training(pipe, spec, config)
    chosen = {k: 0 for k in prepared.sides}

    def step(i: int) -> None:
        result = pair_step_loss(pipe, rect, prepared, PAIR_STEPS[i % len(PAIR_STEPS)], chosen, config, sched, gen)
        opt.zero_grad(set_to_none=True)
        result.loss.backward()
        opt.step()

    return step


def reference_stepper(pipe, spec, config) -> Callable[[int], None]:
    """The same for the official-style loop, which re-encodes its sentences every fifth step (each epoch)."""
    from benchmarks.reference_loop import ReferenceTrainer
    from rrnet.train import PAIR_STEPS, new_rectifier

    trainer = ReferenceTrainer(pipe, new_rectifier(pipe, config), spec, config)
    state = {}

    def step(i: int) -> None:
        if i % len(PAIR_STEPS) == 0 or not state:
            state["epoch"] = trainer.sample_epoch()
        loss = trainer.pair_loss(PAIR_STEPS[i % len(PAIR_STEPS)], *state["epoch"])
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()

    return step


def rate(successes: int, n: int) -> dict:
    """A measured rate with its 95 % Wilson interval, as the result files store it."""
    from rrnet.eval.stats import wilson_interval

    lo, hi = wilson_interval(successes, n)
    return {"rate": successes / n, "successes": successes, "n": n, "ci95": [lo, hi]}


def grouped_rows(rows: list[dict], key: str, key_order, variant_order) -> list[tuple[tuple, list[dict]]]:
    """Result rows grouped by (row[key], variant, alpha), in the given orders (alpha ascending, base first)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row[key], row["variant"], row["alpha"]), []).append(row)
    return sorted(groups.items(), key=lambda kv: (key_order.index(kv[0][0]), variant_order.index(kv[0][1]), kv[0][2] or 0))


def keyed_union(first: list[dict], second: list[dict], key: Callable[[dict], tuple]) -> list[dict]:
    """Entries of both lists, one per key; an entry of `second` replaces the one of `first` with its key."""
    return list({key(e): e for e in first + second}.values())


def merge_result_files(paths: list, out, keyed: dict[str, Callable[[dict], tuple]], summarise: Callable) -> None:
    """Pool runs of one benchmark made side by side (each into its own file): one settings block, the
    union of each keyed list such as "rows" (a later file wins a repeated entry), the training logs,
    the latest date, and the summary recomputed from the pooled rows."""
    import json

    from rrnet.atomic import atomic_write_text

    out = Path(out)
    merged: dict = json.loads(out.read_text()) if out.is_file() else {}
    for path in map(Path, paths):
        part = json.loads(path.read_text())
        if merged.get("settings", part["settings"]) != part["settings"]:
            raise SystemExit(f"{path} was measured with other settings than {out}; not merged")
        merged.update(settings=part["settings"], machine=part["machine"],
                      training={**merged.get("training", {}), **part.get("training", {})},
                      date=max(merged.get("date", ""), part.get("date", "")),
                      **{name: keyed_union(merged.get(name, []), part.get(name, []), key) for name, key in keyed.items()})
    merged["summary"] = summarise(merged["rows"])
    atomic_write_text(out, json.dumps(merged, indent=2) + "\n")
    print(f"merged {len(paths)} file(s) into {out}: {len(merged['rows'])} rows")


def pooled_rate(members: list[dict], get) -> dict:
    """One rate over several rows: their successes and trials summed (`get` picks each row's counts)."""
    return rate(sum(get(m)["successes"] for m in members), sum(get(m)["n"] for m in members))


def sampled_images(pipe, prompt: str, alpha, rectifier, triplet, n: int, seed: int, steps: int, guidance: float):
    """`n` images of `prompt` as arrays, rectified at `alpha` unless it is None."""
    import torch

    from rrnet.generate import prompt_embeddings
    from rrnet.generate import sample_arrays

    with torch.no_grad():
        embeds = prompt_embeddings(pipe, prompt, alpha, rectifier, triplet)
    return sample_arrays(pipe, embeds, n, seed, steps, guidance)


def judge_object(pipe, obj: str, alpha, rectifier, n: int, seed: int, steps: int, guidance: float) -> dict:
    """Sample `n` images of the world's single-object caption of `obj` (through `rectifier` at `alpha`
    unless alpha is None: a generalist passes such a prompt through) and judge whether `obj` is drawn."""
    from rrnet.world.judge import find_objects
    from rrnet.world.vocab import object_prompt

    found = [obj in find_objects(im)
             for im in sampled_images(pipe, object_prompt(obj), alpha, rectifier, None, n, seed, steps, guidance)]
    return {"objects": rate(sum(found), n)}


def judge_prompt(pipe, words: tuple[str, str, str], alpha, rectifier, triplet, n: int, seed: int, steps: int,
                 guidance: float) -> dict:
    """Sample `n` images of "a A R a B" (rectified at `alpha` unless it is None) and judge them exactly:
    relation, swapped and object rates with their Wilson intervals."""
    from rrnet.world.vocab import prompt_for

    return judge_pair_images(sampled_images(pipe, prompt_for(*words), alpha, rectifier, triplet, n, seed, steps, guidance),
                             words)


def judge_pair_images(images, words: tuple[str, str, str]) -> dict:
    """Relation, swapped and object rates (with their Wilson intervals) of images of "a A R a B", judged exactly."""
    from rrnet.world.judge import judge_image

    judged = [judge_image(im, *words) for im in images]
    n = len(judged)
    return {"relation": rate(sum(j.verdict == "ARB" for j in judged), n),
            "swapped": rate(sum(j.verdict == "BRA" for j in judged), n),
            "objects": rate(sum(j.has_a and j.has_b for j in judged), n)}
