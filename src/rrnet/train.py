"""Training a relation rectifier on one relation, following the official RRNet recipe by default.

Each epoch draws one random exemplar image from each of the four folders (A R B, B R A, A, B) and
runs five pair steps, each with its own optimiser step: ARB/BRA, ARB/A, ARB/B, BRA/B, BRA/A.
The object-sentence sides ("this is a photo of A") use the object-sentence adjust node, with
Gaussian noise on its delta so it cannot collapse to zero (object-node disentanglement).
The text encoder, UNet and VAE are frozen and never change.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rrnet.backbone_state import backbone_modules, freeze, is_checkpointing, preserved_flags, preserved_unet_switches
from rrnet.backbones import sdxl
from rrnet.backbones.denoising import latent_distribution, unet_predict
from rrnet.backbones.loading import model_key
from rrnet.data import RelationSpec
from rrnet.direction_targets import DirectionTargets, direction_loss, prepare_direction_targets
from rrnet.errors import CheckpointError, RRNetError
from rrnet.graph import PROMPT_ADJUST
from rrnet.locking import output_lock
from rrnet.losses import PairLoss, denoising_target, relation_compelling_loss, sample_timestep
from rrnet.mixed_precision import backward_and_step, gradient_scaler
from rrnet.prompt_parser import relation_phrases
from rrnet.rectifier import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    RectifierConfig,
    RelationRectifier,
    Triplet,
    add_at_eot,
)
from rrnet.training_items import (
    PAIR_STEPS,  # noqa: F401  (re-exported: callers import it from here)
    PreparedRelation,
    Side,
    item_prompt_pairs,
    item_triplets,
    prepare_item,
    prepare_relation,
    refresh_text,
)
from rrnet.resume import (
    Checkpointer,
    Checkpointing,
    RunLog,
    images_digest,
    start_output,
    stop_requests,
    training_rng,
)



LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Training hyper-parameters; defaults are the official recipe (SD 2.1-base, 100 epochs)."""

    epochs: int = 100
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    positive_weight: float = 10.0
    negative_weight: float = 2.0
    negative: bool = True
    disentangle: bool = True
    disentangle_noise: float = 0.05
    importance_sampling: bool = True
    timestep_min: float = 0.0  # draw timesteps only from t >= timestep_min * T (0: the whole range)
    resolution: int | None = None
    hidden: int = 512
    heads: int = 2
    num_layers: int = 2
    seed: int = 0
    adjuster: str = "hgcn"  # ablation "free": a learned vector per prompt; "role": f(A, R) - f(B, R);
    # "triplet": f(A, R, B) (rectifier.py)
    antisymmetric: bool = False  # prompt adjustment g(A R B) - g(B R A): negated by swapping the objects
    relations_per_step: int = 8  # several relations: how many share one optimiser step (one UNet batch)
    direction_weight: float = 1.0  # weight of the direction-target loss, when direction pairs are given
    # recipe options beyond the paper's (its values are the defaults); `recipe` names the preset the
    # values came from (rrnet.recipes), recorded in the rectifier's config.json
    recipe: str = "official"
    timesteps_per_step: int = 1  # noise draws and timesteps per side in one pair step (one batched UNet call)
    lr_schedule: str = "constant"  # or "cosine" (diffusers' get_scheduler), after `warmup_steps`
    warmup_steps: int = 0
    edit_positions: str = "eot"  # ablation "after_eot": edit the padding after the EOT as well
    # fast path: each part can be switched off to measure it (results stay the same)
    cache_latents: bool = True
    cache_text: bool = True
    batch_unet: bool = True
    gradient_checkpointing: bool = False
    compile_unet: bool = False

    def check(self) -> None:
        """One RRNetError line for a value that cannot train (NaN, infinite, negative, out of range)."""
        for name in ("learning_rate", "weight_decay", "positive_weight", "negative_weight", "disentangle_noise",
                     "direction_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise RRNetError(f"{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.timestep_min, (int, float)) or not 0 <= self.timestep_min < 1:
            raise RRNetError(f"timestep_min must be in [0, 1), got {self.timestep_min!r}")
        if self.learning_rate <= 0:
            raise RRNetError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise RRNetError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise RRNetError(f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        for name in ("epochs", "hidden", "heads", "num_layers", "seed", "relations_per_step", "timesteps_per_step"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name in ("epochs", "seed") else 1):
                raise RRNetError(f"{name} must be a {'non-negative' if name in ('epochs', 'seed') else 'positive'} "
                                 f"integer, got {value!r}")
        if self.seed >= 2**63:
            raise RRNetError(f"seed must be below 2**63, got {self.seed}")
        if self.resolution is not None and (not isinstance(self.resolution, int) or self.resolution < 8
                                            or self.resolution % 8 or self.resolution > 4096):
            raise RRNetError(f"resolution must be a multiple of 8 from 8 to 4096, got {self.resolution!r}")


def exemplar_latent(pipe, side: Side, index: int, generator: torch.Generator) -> torch.Tensor:
    """A fresh sample from the VAE posterior of one exemplar (cached statistics, or encoded now)."""
    if side.images is None:
        mean, std = side.latent_mean[index], side.latent_std[index]
    else:
        mean, std = (x[0] for x in latent_distribution(pipe, side.images[index : index + 1]))
    eps = torch.randn(mean.shape, generator=generator)
    return mean + std * eps.to(std.device)


def negative_latents(own: torch.Tensor) -> torch.Tensor:
    """The negatives of a pair step's two sides: each side's negative is the other side's image."""
    return own.flip(0)


def pair_step_loss(
    pipe,
    rectifier: RelationRectifier,
    prepared: PreparedRelation | Sequence[PreparedRelation],
    pair: tuple[str, str] | Sequence[tuple[str, str]],
    chosen: dict[str, int] | Sequence[dict[str, int]],
    config: TrainConfig,
    noise_scheduler,
    generator: torch.Generator,
) -> PairLoss:
    """The relation-compelling loss of one pair step: one relation, or a group of relations trained
    together (each with its own timestep and noise draw, all in one UNet batch; the loss is their mean)."""
    device = pipe.unet.device
    group = [prepared] if isinstance(prepared, PreparedRelation) else list(prepared)
    picks = [chosen] if isinstance(chosen, dict) else list(chosen)
    pairs = [pair] * len(group) if isinstance(pair[0], str) else list(pair)
    conds, owns, others, noises, steps = [], [], [], [], []
    pooleds = []  # SDXL: the pooled embeddings, edited along with the EOT
    for relation, pick, names in zip(group, picks, pairs, strict=True):
        if not config.cache_text:
            relation = refresh_text(pipe, rectifier, relation)
        sides = [relation.sides[name] for name in names]
        deltas = rectifier.adjust_vectors(relation.batched)
        delta_rows = []
        for side in sides:
            delta = deltas[side.graph, side.adjust]
            if side.delta_noise:
                delta = delta + side.delta_noise * torch.randn(delta.shape, generator=generator).to(delta.device)
            delta_rows.append(delta)
        embeds = torch.stack([s.encoded.hidden for s in sides]).to(device)
        eots = torch.tensor([s.encoded.tokens.eot_index for s in sides])
        conds.append(add_at_eot(embeds, eots, torch.stack(delta_rows).to(device), positions=rectifier.config.edit_positions))
        if sides[0].encoded.pooled is not None:
            pooled = torch.stack([s.encoded.pooled for s in sides]).to(device)
            pooleds.append(sdxl.edited_pooled(pipe, pooled, embeds, conds[-1], eots))
        for _ in range(config.timesteps_per_step):  # one exemplar sample, noise and timestep per draw
            own = torch.stack([exemplar_latent(pipe, side, pick[side.name], generator) for side in sides]).to(device)
            owns.append(own)
            others.append(negative_latents(own))
            noises.append(torch.randn(own.shape, generator=generator).to(device))
            t = sample_timestep(noise_scheduler.config.num_train_timesteps, generator, config.importance_sampling,
                                minimum=config.timestep_min)
            steps.append(t.to(device).expand(len(sides)))
        conds += [conds[-1]] * (config.timesteps_per_step - 1)
        pooleds += pooleds[-1:] * (config.timesteps_per_step - 1)
    cond, own, other, noise, t = (torch.cat(x) for x in (conds, owns, others, noises, steps))
    pooled = torch.cat(pooleds) if pooleds else None

    noisy_own = noise_scheduler.add_noise(own, noise, t)
    target_own = denoising_target(noise_scheduler, own, noise, t)
    pred_other = target_other = None
    if not config.negative:
        pred_own = conditioned_prediction(pipe, noisy_own, t, cond, pooled)
    else:
        noisy_other = noise_scheduler.add_noise(other, noise, t)
        target_other = denoising_target(noise_scheduler, other, noise, t)
        if config.batch_unet:  # one UNet call for both terms: same conditioning, twice the batch
            both = conditioned_prediction(pipe, torch.cat([noisy_own, noisy_other]), torch.cat([t, t]),
                                          torch.cat([cond, cond]), None if pooled is None else torch.cat([pooled, pooled]))
            pred_own, pred_other = both.chunk(2)
        else:
            pred_own = conditioned_prediction(pipe, noisy_own, t, cond, pooled)
            pred_other = conditioned_prediction(pipe, noisy_other, t, cond, pooled)
    return relation_compelling_loss(
        pred_own, target_own, pred_other, target_other, config.positive_weight, config.negative_weight
    )


def conditioned_prediction(pipe, latents: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor,
                           pooled: torch.Tensor | None) -> torch.Tensor:
    """The frozen UNet's prediction; SDXL also gets the (edited) pooled embeddings and the time ids of
    the latents' resolution, as the pipeline's default sampling passes them."""
    if pooled is None:
        return unet_predict(pipe, latents, timesteps, cond)
    resolution = latents.shape[-1] * pipe.vae_scale_factor
    return unet_predict(pipe, latents, timesteps, cond, sdxl.added_conditions(pipe, pooled, resolution))


@torch.no_grad()
def rectified_eot_cosine(rectifier: RelationRectifier, prepared: PreparedRelation, alpha: float = 1.0) -> float:
    """Cosine similarity of the two prompts' EOT vectors after rectification (before: alpha=0)."""
    deltas = rectifier.adjust_vectors(prepared.batched)[:, PROMPT_ADJUST].cpu()
    edited = {name: side.encoded.eot.cpu() + alpha * deltas[side.graph] for name, side in prepared.sides.items()
              if side.adjust == PROMPT_ADJUST}
    others = [name for name in edited if name != "prompt"]  # "swapped", or a scene's "swapped_k"
    return sum(F.cosine_similarity(edited["prompt"], edited[n], dim=0).item() for n in others) / len(others)


def configure_unet(pipe, config: TrainConfig) -> None:
    """Memory/speed switches on the frozen UNet: activation checkpointing and `torch.compile`."""
    if config.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
    elif is_checkpointing(pipe.unet):
        pipe.unet.disable_gradient_checkpointing()
    if config.compile_unet and getattr(pipe.unet, "_compiled_call_impl", None) is None:
        pipe.unet.compile()  # in place, once


def new_rectifier(pipe, config: TrainConfig, spec: RelationSpec | Sequence[RelationSpec] | None = None) -> RelationRectifier:
    """A freshly initialised rectifier (seeded); with `spec` (one or several), it already knows its
    triplets, prompts and the relation phrases it will find in prompts."""
    width = pipe.text_encoder.config.hidden_size
    rc = RectifierConfig(text_width=width, hidden=config.hidden, heads=config.heads, num_layers=config.num_layers,
                         adjuster=config.adjuster, edit_positions=config.edit_positions,
                         antisymmetric=config.antisymmetric)
    if sdxl.is_sdxl(pipe):  # the EOT row of both encoders' states, and the pooled embedding it feeds
        rc.text_widths, rc.pooled_width = sdxl.text_widths(pipe), sdxl.pooled_width(pipe)
        rc.text_width, rc.format_version = sum(rc.text_widths), 2
    specs = [] if spec is None else [spec] if isinstance(spec, RelationSpec) else list(spec)
    if specs:
        known = list(dict.fromkeys(t for s in specs for t in item_triplets(s)))
        rc.triplets = [asdict(Triplet(*t)) for t in known]
        rc.prompts = [list(p) for s in specs for p in item_prompt_pairs(s)]
        rc.relation_phrases = relation_phrases([(t, list(dict.fromkeys(x for p in item_prompt_pairs(s) for x in p)))
                                                for s in specs for t in item_triplets(s)])
        rc.joint_relations = any(not isinstance(s, RelationSpec) for s in specs)
    with torch.random.fork_rng(devices=[]):  # seeded initial weights; the caller's global RNG is untouched
        torch.manual_seed(config.seed)
        rectifier = RelationRectifier(rc)
    return rectifier.to(pipe.unet.device)


@contextmanager
def training_backbone(pipe, config: TrainConfig) -> Iterator[None]:
    """Freeze the backbone and set the UNet's speed switches for one run; hand it back as it was."""
    with preserved_flags(backbone_modules(pipe).values()), preserved_unet_switches(pipe.unet):
        freeze(pipe)
        configure_unet(pipe, config)
        yield


def check_finite(value: float, step: int, epoch: int) -> None:
    """A loss that is NaN or infinite ends training with one line; nothing is saved from it."""
    if not math.isfinite(value):
        raise RRNetError(f"training stopped: the loss became {value} at step {step} (epoch {epoch}); "
                         "no rectifier was written. Try a lower --learning_rate")


def setup_training(pipe, spec: RelationSpec, config: TrainConfig):
    """Frozen backbone, fresh rectifier, cached data, noise scheduler, optimiser and generator."""
    from diffusers import DDPMScheduler

    freeze(pipe)
    configure_unet(pipe, config)
    rectifier = new_rectifier(pipe, config, spec)
    prepared = prepare_relation(pipe, rectifier, spec, config)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    optimizer = torch.optim.AdamW(rectifier.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    return rectifier, prepared, noise_scheduler, optimizer, generator


# TrainConfig fields that may differ when a run is resumed: the length of the run, and speed
# switches that give the same results (up to float rounding)
RESUME_MAY_CHANGE = frozenset({"epochs", "cache_latents", "cache_text", "batch_unet", "gradient_checkpointing",
                               "compile_unet"})


def rectifier_finished(output_dir: str | Path) -> bool:
    """Whether a folder holds a complete rectifier (its config is written last)."""
    return (Path(output_dir) / CONFIG_NAME).is_file() and (Path(output_dir) / WEIGHTS_NAME).is_file()


def discard_rectifier(output_dir: str | Path) -> None:
    """Remove a finished rectifier before a run replaces it, config first: from then on the folder
    never loads, so an interrupted run cannot leave old weights beside a new log."""
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        (Path(output_dir) / name).unlink(missing_ok=True)


def run_identity(pipe, specs: Sequence[RelationSpec], config: TrainConfig, model_id: str | None) -> dict:
    """What a checkpoint must agree with to be resumed: recipe, relations and their images, model."""
    def relation(spec) -> dict:
        if isinstance(spec, RelationSpec):
            images = [*spec.images_prompt, *spec.images_swapped, *spec.images_a, *spec.images_b]
            return {"words": [spec.object_a, spec.relation, spec.object_b],
                    "prompts": [spec.prompt, spec.swapped_prompt], "images": images_digest(images)}
        images = [*spec.images_prompt, *(p for paths in spec.images_swapped for p in paths),
                  *(p for _, paths in spec.images_objects for p in paths)]
        return {"relations": [list(t) for t in spec.relations], "prompts": [spec.prompt, *spec.swapped_prompts],
                "images": images_digest(images)}

    return {
        "kind": "rrnet-rectifier",
        "config": {k: v for k, v in asdict(config).items() if k not in RESUME_MAY_CHANGE},
        "relations": [relation(spec) for spec in specs],
        "model": model_key(model_id),
        "dtype": str(pipe.unet.dtype),
    }


def check_relation_set(specs: Sequence[RelationSpec], config: TrainConfig) -> None:
    """Several relations train one rectifier only with the graph network, and each only once."""
    if not specs:
        raise RRNetError("no relations to train on")
    seen: dict[tuple[str, str, str], str] = {}
    scenes: dict[str, str] = {}
    for spec in specs:
        if not isinstance(spec, RelationSpec):
            if spec.prompt in scenes:
                raise RRNetError(f"the prompt {spec.prompt!r} is given twice ({scenes[spec.prompt]} and {spec.name})")
            scenes[spec.prompt] = spec.name
            if config.adjuster == "free" or not config.cache_text:
                raise RRNetError("prompts stating several relations train with the graph network and cached text "
                                 "(not --no_hgcn or --no_cache_text)")
            continue
        key = (spec.object_a, spec.relation, spec.object_b)
        if key in seen or (spec.object_b, spec.relation, spec.object_a) in seen:
            other = seen.get(key) or seen[(spec.object_b, spec.relation, spec.object_a)]
            raise RRNetError(f"relation {' '.join(key)!r} is given twice ({other} and {spec.name}); "
                             "each relation folder already trains both directions")
        seen[key] = spec.name
    if config.antisymmetric and config.adjuster != "hgcn":
        raise RRNetError("--antisymmetric needs the graph network (not --no_hgcn or --triplet_mlp; --role is "
                         "antisymmetric already)")
    if len(specs) > 1 and config.adjuster == "free":
        raise RRNetError("--no_hgcn trains one relation only: a free vector per prompt cannot carry over to other "
                         f"relations (got {len(specs)})")


def train_rectifier(
    pipe,
    spec: RelationSpec | Sequence[RelationSpec],
    config: TrainConfig | None = None,
    output_dir: str | Path | None = None,
    model_id: str | None = None,
    progress: bool = True,
    checkpointing: Checkpointing | None = None,
    direction_pairs: Sequence[tuple[str, str]] | None = None,
) -> tuple[RelationRectifier, list[dict]]:
    """Train one rectifier on one relation or several; returns it and the per-epoch history.

    Several relations: every epoch visits each relation's pair steps once, `relations_per_step`
    relations per optimiser step (one UNet batch); with one relation this is the paper's loop.
    `direction_pairs` (prompt, swapped prompt) that the text encoder already tells apart add
    `direction_weight` times the direction-target loss (see `rrnet.direction_targets`) to every step.

    With `output_dir`, writes `train_log.jsonl` (one line per epoch), `checkpoint-N/` folders as
    `checkpointing` asks (and on Ctrl-C, raising `TrainingInterrupted`), and the rectifier last.
    `checkpointing.resume_from` continues a run to the same weights an uninterrupted run ends
    with. The pipeline is handed back as it came (flags, speed switches); the caller's global
    random streams are left as they were.
    """
    config = config or TrainConfig()
    config.check()
    specs = [spec] if isinstance(spec, RelationSpec) else list(spec)
    check_relation_set(specs, config)
    checkpointing = checkpointing or Checkpointing()
    with output_lock(output_dir):
        return _train_locked(pipe, specs, config, output_dir, model_id, progress, checkpointing, direction_pairs)


def _train_locked(pipe, specs: list[RelationSpec], config: TrainConfig, output_dir: str | Path | None, model_id: str | None,
                  progress: bool, checkpointing: Checkpointing,
                  direction_pairs: Sequence[tuple[str, str]] | None) -> tuple[RelationRectifier, list[dict]]:
    if output_dir is None and (checkpointing.every or checkpointing.resume_from):
        raise RRNetError("checkpointing and resuming need an output folder")
    with training_backbone(pipe, config), training_rng(config.seed, pipe.unet.device):
        rectifier = new_rectifier(pipe, config, specs)
        # words, prompts, images: checked before any write
        prepared = [prepare_item(pipe, rectifier, spec, config) for spec in specs]
        direction = prepare_direction_targets(pipe, rectifier, direction_pairs) if direction_pairs else None
        identity = run_identity(pipe, specs, config, model_id)
        if direction is not None:
            identity["direction_pairs"] = [list(p) for p in direction.pairs]
        resume = None
        if output_dir is not None:
            resume = start_output(output_dir, checkpointing, rectifier_finished(output_dir),
                                  lambda: discard_rectifier(output_dir), "rectifier")
        history = _fit(pipe, rectifier, prepared, config, output_dir, progress, checkpointing, identity, resume, direction)
    rectifier.eval()
    rectifier.config.backbone = model_id
    rectifier.config.training = asdict(config)
    if output_dir is not None:
        if not all(torch.isfinite(p).all() for p in rectifier.parameters()):
            raise RRNetError("training stopped: the rectifier's weights are not finite; no rectifier was written")
        rectifier.save_pretrained(output_dir)  # weights, then config.json: the folder loads from that rename on
    return rectifier, history


def learning_rate_schedule(optimizer, config: TrainConfig, total_steps: int):
    """None for the paper's constant rate; else step -> learning rates, read from diffusers'
    `get_scheduler` (warm-up, then cosine decay to zero over the run)."""
    if config.lr_schedule == "constant" and not config.warmup_steps:
        return None
    from diffusers.optimization import get_scheduler

    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.learning_rate)
    scheduler = get_scheduler(config.lr_schedule if config.lr_schedule != "constant" else "constant_with_warmup",
                              probe, num_warmup_steps=config.warmup_steps, num_training_steps=max(total_steps, 1))
    factors = [scheduler.lr_lambdas[0](step) for step in range(max(total_steps, 1))]
    return lambda step: [config.learning_rate * factors[min(step, len(factors) - 1)]] * len(optimizer.param_groups)


def _epoch_plan(order: list[int], per_step: int, n_steps: int) -> list[tuple[list[int], int]]:
    """An epoch's optimiser steps: each group of relations (in the epoch's order) runs its pair
    steps; step i of a relation with fewer steps is its step i modulo their number."""
    groups = [order[i:i + per_step] for i in range(0, len(order), per_step)]
    return [(group, i) for group in groups for i in range(n_steps)]


def _mean_steps(entries: list[dict]) -> dict:
    """One pair step's losses averaged over the relation groups of an epoch."""
    mean = {key: sum(e[key] for e in entries) / len(entries) for key in ("loss", "positive", "direction")
            if key in entries[0]}
    negatives = [e["negative"] for e in entries if e["negative"] is not None]
    mean["negative"] = sum(negatives) / len(negatives) if negatives else None
    return mean


def _fit(pipe, rectifier: RelationRectifier, prepared: list[PreparedRelation], config: TrainConfig,
         output_dir: str | Path | None, progress: bool, checkpointing: Checkpointing, identity: dict,
         resume: Path | None, direction: DirectionTargets | None = None) -> list[dict]:
    """The training loop: epochs of pair steps, each step one optimiser step, resumable at any step."""
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    optimizer = torch.optim.AdamW(rectifier.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scaler = gradient_scaler(pipe)
    generator = torch.Generator().manual_seed(config.seed)
    picker = random.Random(config.seed)
    n_steps = max(len(relation.steps) for relation in prepared)
    steps_per_epoch = len(_epoch_plan(list(range(len(prepared))), config.relations_per_step, n_steps))
    schedule = learning_rate_schedule(optimizer, config, config.epochs * steps_per_epoch)
    base_cosines = [rectified_eot_cosine(rectifier, relation, alpha=0.0) for relation in prepared]
    several = len(prepared) > 1

    with stop_requests() as stop:
        saver = Checkpointer(output_dir, checkpointing, identity, {"rectifier": rectifier}, optimizer, scaler,
                             {"train": generator}, {"picker": picker}, stop)
        # step: optimiser steps done; epoch: epochs done; position: optimiser steps done in the current epoch
        state: dict = {"step": 0, "epoch": 0, "position": 0, "order": None, "chosen": None, "record": None,
                       "history": []}
        if resume is not None:
            state = saver.load(resume)
            if state["epoch"] > config.epochs:
                raise CheckpointError(f"{resume}: the run is past epoch {state['epoch']}, beyond --epochs {config.epochs}")
        log = RunLog(output_dir, state["history"]) if output_dir is not None else None
        rectifier.train()
        bar = tqdm(range(state["epoch"], config.epochs), desc="train", disable=not progress,
                   initial=state["epoch"], total=config.epochs)
        try:
            for epoch in bar:
                if state["position"] == 0:
                    order = list(range(len(prepared)))
                    if several:
                        picker.shuffle(order)
                    state["order"] = order
                    state["chosen"] = [{name: picker.randrange(len(s.latent_mean)) for name, s in relation.sides.items()}
                                       for relation in prepared]
                    state["record"] = {"epoch": epoch + 1, "steps": {}}
                plan = _epoch_plan(state["order"], config.relations_per_step, n_steps)
                for index in range(state["position"], len(plan)):
                    group, step = plan[index]
                    pairs = [prepared[i].steps[step % len(prepared[i].steps)] for i in group]
                    pair = pairs[0]
                    if several:
                        members, picks = [prepared[i] for i in group], [state["chosen"][i] for i in group]
                        pair = pairs
                    else:
                        members, picks = prepared[0], state["chosen"][0]
                    result = pair_step_loss(pipe, rectifier, members, pair, picks, config, noise_scheduler, generator)
                    total, entry = result.loss, {}
                    if direction is not None:
                        direction_term = direction_loss(rectifier, direction)
                        total = total + config.direction_weight * direction_term
                        entry["direction"] = direction_term.item()
                    loss = total.item()
                    check_finite(loss, state["step"] + 1, epoch + 1)
                    if schedule is not None:  # the learning rate of this step, from the steps done
                        for group, lr in zip(optimizer.param_groups, schedule(state["step"])):
                            group["lr"] = lr
                    backward_and_step(total, optimizer, scaler)
                    state["record"]["steps"].setdefault("/".join(pairs[0]), []).append({
                        "loss": loss,
                        "positive": result.positive.item(),
                        "negative": None if result.negative is None else result.negative.item(),
                        **entry,
                    })
                    state["step"] += 1
                    state["position"] = index + 1
                    saver.after_step(state)
                record = state["record"]
                record["steps"] = {key: _mean_steps(entries) for key, entries in record["steps"].items()}
                losses = [s["loss"] for s in record["steps"].values()]
                record["loss"] = sum(losses) / len(losses)
                cosines = [rectified_eot_cosine(rectifier, relation) for relation in prepared]
                record["eot_cosine"] = sum(cosines) / len(cosines)
                record["eot_cosine_base"] = sum(base_cosines) / len(base_cosines)
                if several:
                    record["eot_cosines"] = {relation.name: c for relation, c in zip(prepared, cosines)}
                state["history"].append(record)
                state.update(epoch=epoch + 1, position=0, order=None, chosen=None, record=None)
                bar.set_postfix(loss=f"{record['loss']:.4f}", cos=f"{record['eot_cosine']:.3f}")
                if log is not None:
                    log.write(record)
        finally:
            if log is not None:
                log.close()
    return state["history"]
