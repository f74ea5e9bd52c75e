"""Does the mini world's denoiser read a held-out pair's direction from its EOT at all?

A generalist rectifier can only rectify a pair it never saw if some EOT edit that can be predicted
without that pair's images makes the denoiser draw each order. This probe asks the question
without any rectifier training. It fits two text-only models on the world's order-aware pairs
(not control, train or held-out), whose EOT states the text encoder keeps apart:
  additive  the direction part of each prompt, half the EOT difference of "A R B" and "B R A",
            as v_R(A) - v_R(B): one vector per object and relation phrase;
  role      the whole EOT of "A R B" as b_R + s_R(A) + o_R(B): one vector per object in the
            subject role, one in the object role, one per phrase.
It reports how well each predicts the control prompts (order-aware, held out of the fit: R^2 and
cosine), then samples every held-out prompt with the base model, with `alpha * (v_R(A) - v_R(B))`
added at the EOT (`additive`), and with the EOT moved by `alpha` of the way to the role model's
prediction (`role`: alpha 1 puts the EOT an order-aware encoder would plausibly give), 100 images
each by default, exact judge, 95 % Wilson intervals. Rows are saved as they finish; a rerun resumes.

    python -m benchmarks.direction_probe [--samples 100] [--additive_alpha 1 2] [--role_alpha 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.common import grouped_rows, judge_pair_images, pooled_rate
from rrnet.atomic import atomic_write_text
from rrnet.backbones.loading import load_pipeline
from rrnet.rectifier import EncodedPrompt, add_at_eot, encode_prompt
from rrnet.world.benchmark import order_aware_pairs, pair_relations, split_pairs
from rrnet.generate import sample_arrays
from rrnet.world.record import load_recipe, shipped_backbone, world_sampling
from rrnet.world.vocab import object_names, prompt_for, relation_phrases

Words = tuple[str, str, str]
VARIANTS = ("base", "additive", "role")


def role_design(prompts: list[Words], objects: list[str], phrases: list[str], part: str) -> torch.Tensor:
    """Indicator rows of the linear models: `additive` +1 at (phrase, A) and -1 at (phrase, B);
    `role` 1 at (phrase, subject A), (phrase, object B) and (phrase, bias)."""
    n, width = len(objects), (len(objects) if part == "additive" else 2 * len(objects) + 1)
    x = torch.zeros(len(prompts), len(phrases) * width)
    for row, (a, phrase, b) in enumerate(prompts):
        start = phrases.index(phrase) * width
        if part == "additive":
            x[row, start + objects.index(a)] += 1.0
            x[row, start + objects.index(b)] -= 1.0
        else:
            x[row, start + objects.index(a)] = 1.0
            x[row, start + n + objects.index(b)] = 1.0
            x[row, start + 2 * n] = 1.0
    return x


class TextModel:
    """A least-squares linear model from (A, phrase, B) indicators to EOT vectors (`additive` or `role`)."""

    def __init__(self, part: str, objects: list[str], phrases: list[str]) -> None:
        self.part, self.objects, self.phrases = part, list(objects), list(phrases)
        self.weights: torch.Tensor | None = None

    def fit(self, prompts: list[Words], targets: torch.Tensor) -> "TextModel":
        x = role_design(prompts, self.objects, self.phrases, self.part)
        self.weights = torch.linalg.lstsq(x.double(), targets.double(), driver="gelsd").solution.float()
        return self

    def predict(self, prompts: list[Words]) -> torch.Tensor:
        return role_design(prompts, self.objects, self.phrases, self.part) @ self.weights

    def score(self, prompts: list[Words], targets: torch.Tensor) -> dict:
        """R^2 (against the targets' mean) and the mean cosine of prediction and target."""
        pred = self.predict(prompts)
        residual = ((pred - targets) ** 2).sum()
        spread = ((targets - targets.mean(0)) ** 2).sum() if self.part == "role" else (targets ** 2).sum()
        cosine = torch.nn.functional.cosine_similarity(pred, targets, dim=1).mean()
        return {"r2": float(1 - residual / spread), "cosine": float(cosine), "prompts": len(prompts)}


def both_orders(pairs) -> list[tuple[Words, Words]]:
    """(A R B, B R A) for every pair and phrase of its axis."""
    return [((a, r, b), (b, r, a)) for a, r, b in pair_relations(pairs)]


def encoded_eots(pipe, orders: list[tuple[Words, Words]]) -> dict[Words, torch.Tensor]:
    out = {}
    for pair in orders:
        for words in pair:
            out[words] = encode_prompt(pipe, prompt_for(*words)).eot
    return out


def fit_models(pipe, recipe) -> tuple[TextModel, TextModel, dict]:
    """Both text models fitted on the order-aware pairs, and their scores there and on the control pairs."""
    objects, phrases = list(object_names()), list(relation_phrases())
    fitted, held = both_orders(order_aware_pairs(recipe)), both_orders(split_pairs(recipe, ["control"]))
    eots = encoded_eots(pipe, fitted + held)

    def direction_data(orders):
        return [x for x, _ in orders], torch.stack([0.5 * (eots[x] - eots[y]) for x, y in orders])

    def state_data(orders):
        words = [w for pair in orders for w in pair]
        return words, torch.stack([eots[w] for w in words])

    additive = TextModel("additive", objects, phrases).fit(*direction_data(fitted))
    role = TextModel("role", objects, phrases).fit(*state_data(fitted))
    scores = {"additive": {"fit": additive.score(*direction_data(fitted)), "control": additive.score(*direction_data(held))},
              "role": {"fit": role.score(*state_data(fitted)), "control": role.score(*state_data(held))}}
    return additive, role, scores


def probe_embeds(enc: EncodedPrompt, words: Words, variant: str, alpha: float | None, additive: TextModel,
                 role: TextModel) -> torch.Tensor:
    """The prompt's embeddings (`enc`, the text encoder's) with the variant's EOT edit."""
    hidden = enc.hidden[None]
    if variant == "base":
        return hidden
    delta = additive.predict([words]) if variant == "additive" else role.predict([words]) - enc.eot[None]
    return add_at_eot(hidden, torch.tensor([enc.tokens.eot_index]), delta, alpha)


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for (pair, variant, alpha), members in grouped_rows(rows, "pair", sorted({r["pair"] for r in rows}), VARIANTS):
        out.append({"pair": pair, "variant": variant, "alpha": alpha, "prompts": len(members),
                    "relation": pooled_rate(members, lambda m: m["relation"]),
                    "objects": pooled_rate(members, lambda m: m["objects"]),
                    "worst_prompt_relation": min(m["relation"]["rate"] for m in members)})
    for (variant, alpha) in dict.fromkeys((r["variant"], r["alpha"]) for r in rows):
        members = [r for r in rows if (r["variant"], r["alpha"]) == (variant, alpha)]
        out.append({"pair": "all", "variant": variant, "alpha": alpha, "prompts": len(members),
                    "relation": pooled_rate(members, lambda m: m["relation"]),
                    "objects": pooled_rate(members, lambda m: m["objects"]),
                    "worst_prompt_relation": min(m["relation"]["rate"] for m in members)})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(shipped_backbone()))
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--additive_alpha", type=float, nargs="*", default=[1.0, 2.0])
    ap.add_argument("--role_alpha", type=float, nargs="*", default=[1.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", default="benchmarks/results/direction_probe.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    out = Path(args.output)
    recipe, sampling = load_recipe(args.model), world_sampling(args.model)
    settings = {"model": str(args.model), "samples": args.samples, "seed": args.seed, "sampling": sampling}
    result = json.loads(out.read_text()) if out.is_file() else {}
    if result.get("settings", settings) != settings:
        raise SystemExit(f"{out} was measured with other settings; move it away to measure again")
    rows = {(r["variant"], r["alpha"], r["prompt"]): r for r in result.get("rows", [])}
    pipe = load_pipeline(args.model, device="cpu", progress=False)
    with torch.no_grad():
        additive, role, scores = fit_models(pipe, recipe)
    result.update(settings=settings, machine="2-core CPU, torch " + torch.__version__, text_models=scores)
    for name, s in scores.items():
        print(f"{name}: R^2 {s['fit']['r2']:.3f} on the {s['fit']['prompts']} fitted prompts, "
              f"{s['control']['r2']:.3f} (cosine {s['control']['cosine']:.3f}) on the {s['control']['prompts']} control ones")
    settings_of = [("base", None)] + [("additive", a) for a in args.additive_alpha] + [("role", a) for a in args.role_alpha]
    started = time.time()
    for (a, r, b), swapped in both_orders(split_pairs(recipe, ["heldout"])):
        for words in ((a, r, b), swapped):
            prompt = prompt_for(*words)
            enc = encode_prompt(pipe, prompt)
            for variant, alpha in settings_of:
                if (variant, alpha, prompt) in rows:
                    continue
                with torch.no_grad():
                    embeds = probe_embeds(enc, words, variant, alpha, additive, role)
                images = sample_arrays(pipe, embeds, args.samples, args.seed, sampling["num_inference_steps"],
                                       sampling["guidance_scale"])
                rows[(variant, alpha, prompt)] = {"pair": f"{a} / {b}", "variant": variant, "alpha": alpha,
                                                  "prompt": prompt, **judge_pair_images(images, words)}
                result.update(rows=list(rows.values()), summary=summarise(list(rows.values())),
                              date=time.strftime("%Y-%m-%d"))
                atomic_write_text(out, json.dumps(result, indent=2) + "\n")
            print(f"{prompt}: done ({time.time() - started:.0f} s)")
    for s in summarise(list(rows.values())):
        alpha = "" if s["alpha"] is None else f" alpha={s['alpha']:g}"
        print(f"{s['pair']:30s} {s['variant']}{alpha}: relation {s['relation']['rate']:.3f} "
              f"(worst prompt {s['worst_prompt_relation']:.2f}), objects {s['objects']['rate']:.3f}")


if __name__ == "__main__":
    main()
