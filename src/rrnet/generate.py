"""Generation with a rectifier: rectified `prompt_embeds` passed to an unmodified diffusers pipeline.

Image k of every prompt and every alpha uses the generator seeded with `seed + k`, so a row of
the grid shows the same starting noise under increasing alpha, and the same seed gives the same
images. The negative (unconditional) embeddings are the pipeline's own, never rectified.
For SDXL a conditioning is `(prompt_embeds, pooled_prompt_embeds)` (`SDXLConditioning`).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rrnet.atomic import atomic_write_text, remove_leftovers
from rrnet.backbones.sdxl import SDXLConditioning, negative_conditioning
from rrnet.data import save_image_atomic
from rrnet.grid import image_grid
from rrnet.locking import output_lock
from rrnet.rectifier import RelationRectifier, Triplet, encode_prompt

DEFAULT_ALPHAS = (0.0, 0.2, 0.4, 0.6, 0.8)
RECORD_NAME = "generation.json"
PAPER_SAMPLING = {"num_inference_steps": 30, "guidance_scale": 7.5}


def sampling_defaults(model: str | Path) -> dict:
    """Steps and guidance to sample `model` with: a mini-world folder's own record (the settings its
    numbers were measured with), otherwise the paper's 30 steps and guidance 7.5."""
    from rrnet.world.record import world_sampling

    return world_sampling(model) or dict(PAPER_SAMPLING)


def fill_sampling_defaults(args) -> None:
    """Set `args.steps` / `args.guidance_scale` the user left out from the model's sampling defaults."""
    if args.steps is None or args.guidance_scale is None:
        defaults = sampling_defaults(args.model)
        if args.steps is None:
            args.steps = defaults["num_inference_steps"]
        if args.guidance_scale is None:
            args.guidance_scale = defaults["guidance_scale"]


@dataclass
class GenerationSettings:
    """Sampling settings; the defaults are the paper's (30 steps, guidance 7.5)."""

    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    num_images: int = 4
    seed: int = 0
    steps: int = 30
    guidance_scale: float = 7.5
    resolution: int | None = None
    # edit only relations whose two orders the text encoder collapses (RelationRectifier.prompt_embeds)
    collapse_gate: float | None = None


@dataclass
class GenerationResult:
    """Where everything went: `images[prompt][alpha_label]` lists PNG paths; `grid` is the overview."""

    output_dir: Path
    images: dict[str, dict[str, list[Path]]] = field(default_factory=dict)
    grid: Path | None = None


def alpha_label(alpha: float | None) -> str:
    return "base" if alpha is None else f"alpha_{alpha:g}"


def prompt_folder(index: int, prompt: str) -> str:
    """A predictable, filesystem-safe folder name for a prompt: `0_a_book_is_placed_on_a_bowl`."""
    slug = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:80] or "prompt"
    return f"{index}_{slug}"


def prompt_embeddings(pipe, prompt: str, alpha: float | None, rectifier: RelationRectifier | None,
                      triplet=None, collapse_gate: float | None = None) -> torch.Tensor | SDXLConditioning:
    """The conditioning for one prompt: rectified at `alpha`, or the base model's when alpha is None
    (SDXL: prompt and pooled embeddings)."""
    if rectifier is None or alpha is None:
        encoded = encode_prompt(pipe, prompt)
        if encoded.pooled is not None:
            dtype = pipe.text_encoder_2.dtype
            return SDXLConditioning(encoded.hidden.unsqueeze(0).to(dtype), encoded.pooled.unsqueeze(0).to(dtype))
        return encoded.hidden.unsqueeze(0).to(pipe.text_encoder.dtype)
    return rectifier.prompt_embeds(pipe, prompt, alpha=alpha, triplet=triplet, collapse_gate=collapse_gate)


def conditioning_kwargs(pipe, embeds: torch.Tensor | SDXLConditioning) -> dict[str, torch.Tensor]:
    """The pipeline arguments of a conditioning. SDXL gets all four embeddings, the unconditional
    side made as the pipeline itself would make it for `prompt_embeds` alone, so alpha 0 gives
    exactly `pipe(prompt=...)`'s images."""
    if not isinstance(embeds, SDXLConditioning):
        return {"prompt_embeds": embeds.to(pipe.device)}
    embeds = SDXLConditioning(*(x.to(pipe.device) for x in embeds))
    negative = negative_conditioning(pipe, embeds)
    return {"prompt_embeds": embeds.prompt_embeds, "pooled_prompt_embeds": embeds.pooled_prompt_embeds,
            "negative_prompt_embeds": negative.prompt_embeds,
            "negative_pooled_prompt_embeds": negative.pooled_prompt_embeds}


def sample_images(pipe, embeds: torch.Tensor | SDXLConditioning, settings: GenerationSettings, output_type: str = "pil",
                  batch_size: int | None = None):
    """`num_images` images from one prompt embedding; image k always uses seed + k, whatever the batching.

    Returns PIL images, or for `output_type="np"` one float array (N, H, W, 3) in [0, 1].
    """
    size = settings.resolution or int(pipe.unet.config.sample_size * pipe.vae_scale_factor)
    batch_size = batch_size or settings.num_images
    chunks = []
    conditioning = conditioning_kwargs(pipe, embeds)
    for start in range(0, settings.num_images, batch_size):
        count = min(batch_size, settings.num_images - start)
        generators = [torch.Generator("cpu").manual_seed(settings.seed + start + k) for k in range(count)]
        out = pipe(
            **conditioning,
            num_images_per_prompt=count,
            generator=generators,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            height=size,
            width=size,
            output_type=output_type,
        )
        chunks.append(out.images)
    if output_type == "np":
        return np.concatenate(chunks)
    return [image for chunk in chunks for image in chunk]


def sample_arrays(pipe, embeds: torch.Tensor, n: int, seed: int, steps: int, guidance: float, batch: int = 64) -> np.ndarray:
    """`n` images (uint8, N x H x W x 3) from one prompt embedding; image k uses seed + k."""
    settings = GenerationSettings(num_images=n, seed=seed, steps=steps, guidance_scale=guidance)
    images = sample_images(pipe, embeds, settings, output_type="np", batch_size=batch)
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def generate(
    pipe,
    prompts: list[str],
    output_dir: str | Path,
    rectifier: RelationRectifier | None = None,
    settings: GenerationSettings | None = None,
    triplet: tuple[str, str, str] | None = None,
    progress: bool = True,
    metadata: dict | None = None,
) -> GenerationResult:
    """Generate every prompt at every alpha, write the PNGs, a grid and `generation.json`.

    Every prompt's conditioning is computed first, so a prompt that cannot be used (too long, the
    relation's words missing) is refused before any image is written. `generation.json` is written
    last and marks a complete folder; a previous result in the folder is discarded first.
    """
    settings = settings or GenerationSettings()
    output_dir = Path(output_dir)
    alphas: list[float | None] = list(settings.alphas) if rectifier is not None else [None]
    if rectifier is not None:
        rectifier.check_backbone(pipe)
    conditioning = {(index, alpha): prompt_embeddings(pipe, prompt, alpha, rectifier, triplet, settings.collapse_gate)
                    for index, prompt in enumerate(prompts) for alpha in alphas}
    metadata = {**(metadata or {}), "rectified": rectified_relations(pipe, prompts, rectifier, triplet,
                                                                     settings.collapse_gate)}
    with output_lock(output_dir):
        output_dir.mkdir(parents=True, exist_ok=True)
        discard_generation(output_dir)
        return _generate_into(pipe, prompts, output_dir, alphas, conditioning, settings, triplet, progress, metadata)


def rectified_relations(pipe, prompts: list[str], rectifier: RelationRectifier | None,
                        triplet: tuple[str, str, str] | None,
                        collapse_gate: float | None = None) -> dict[str, list[list[str]]] | None:
    """Per prompt, the (A, R, B) the rectifier edited (empty: passed through or gated out), so a
    record says what was read from each prompt; None without a rectifier."""
    if rectifier is None:
        return None
    out = {}
    for prompt in prompts:
        found = [Triplet(*triplet)] if triplet is not None else rectifier.find_triplets(prompt)
        found = rectifier.collapsed_only(pipe, found, collapse_gate)
        out[prompt] = [[t.object_a, t.relation, t.object_b] for t in found]
    return out


def discard_generation(output_dir: Path) -> None:
    """Remove a previous `generate` result, its record first: images of another run never sit
    beside a new record, and a killed run leaves a folder without `generation.json`. The
    temporaries a killed run left (hidden, half-written files) go too: the caller holds the lock."""
    (output_dir / RECORD_NAME).unlink(missing_ok=True)
    (output_dir / "grid.png").unlink(missing_ok=True)
    for name in (RECORD_NAME, "grid.png"):  # only rrnet's own names: the folder may hold other files
        remove_leftovers(output_dir, of=name)
    for prompt_dir in output_dir.glob("[0-9]*_*"):
        for image in prompt_dir.glob("*/[0-9][0-9][0-9].png"):
            if image.parent.name == "base" or image.parent.name.startswith("alpha_"):
                image.unlink()
        for folder in prompt_dir.glob("*"):
            if folder.name == "base" or folder.name.startswith("alpha_"):
                remove_leftovers(folder)
        for folder in sorted(prompt_dir.glob("*"), reverse=True) + [prompt_dir]:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def _generate_into(pipe, prompts, output_dir: Path, alphas, conditioning, settings: GenerationSettings, triplet,
                   progress: bool, metadata: dict | None) -> GenerationResult:
    result = GenerationResult(output_dir=output_dir)
    grid_rows, total = [], len(prompts) * len(alphas)
    bar = tqdm(total=total, desc="generate", disable=not progress)
    for index, prompt in enumerate(prompts):
        row, per_alpha = [], {}
        for alpha in alphas:
            images = sample_images(pipe, conditioning[(index, alpha)], settings)
            folder = output_dir / prompt_folder(index, prompt) / alpha_label(alpha)
            paths = [save_image_atomic(im, folder / f"{k:03d}.png") for k, im in enumerate(images)]
            per_alpha[alpha_label(alpha)] = paths
            row.append(images[0])
            bar.update(1)
        result.images[prompt] = per_alpha
        grid_rows.append(row)
    bar.close()
    grid = image_grid(grid_rows, prompts, [alpha_label(a) for a in alphas])
    result.grid = save_image_atomic(grid, output_dir / "grid.png")
    record = {
        "prompts": prompts,
        "settings": asdict(settings),
        "triplet": list(triplet) if triplet else None,
        "images": {p: {a: [str(x.relative_to(output_dir)) for x in v] for a, v in d.items()} for p, d in result.images.items()},
        **(metadata or {}),
    }
    atomic_write_text(output_dir / RECORD_NAME, json.dumps(record, indent=2) + "\n")
    return result
