"""Self-taught exemplars: a relation folder drawn and labelled by the model itself.

A rectifier needs images of "A R B" and of "B R A". For an object pair nobody collected images
of, the base model still draws both objects: when its text encoder cannot tell the two orders
apart it draws either layout, at random, and when it can it mostly draws what it is told. So the
model's own samples of the prompt and its swap hold both layouts; what is missing is which is
which. The denoiser says that too: noised at a few levels, each latent pixel is predicted
better under "a photo of A" where A is drawn and better under "a photo of B" where B is (a
diffusion classifier read per pixel, no detector). The centroids of the two regions along the
relation's axis label the layout; images without a clear layout are dropped. The result is a
relation folder in the official layout (ARB and BRA images, one folder of single-object images
per object) that `rrnet train` reads like any other, so a pair can be rectified with no image
collected by anyone. Positional relations only: the label is read along the relation's axis.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rrnet.atomic import atomic_write_folder, atomic_write_text
from rrnet.backbones import sdxl
from rrnet.backbones.denoising import latent_distribution, unet_predict
from rrnet.data.images import save_image_atomic
from rrnet.errors import DataError, RRNetError
from rrnet.locking import folder_lock
from rrnet.losses import denoising_target
from rrnet.rectifier import encode_prompt

log = logging.getLogger(__name__)

# relation phrase -> (axis, whether A comes first along it: top for "y", left for "x")
POSITIONAL = {
    "above": ("y", True), "over": ("y", True), "on": ("y", True), "on top of": ("y", True),
    "is placed on": ("y", True), "below": ("y", False), "under": ("y", False), "beneath": ("y", False),
    "underneath": ("y", False), "left of": ("x", True), "on the left of": ("x", True),
    "to the left of": ("x", True), "right of": ("x", False), "on the right of": ("x", False),
    "to the right of": ("x", False),
}
PROMPT_TEMPLATE = "a {a} {relation} a {b}"
OBJECT_TEMPLATE = "a photo of a {obj}"
RECORD_FILE = "self_taught.json"


def relation_layout(phrase: str) -> tuple[str, bool]:
    """(axis, A first) of a positional relation phrase; any other phrase is a user error."""
    try:
        return POSITIONAL[" ".join(phrase.lower().split())]
    except KeyError:
        raise DataError(f"relation {phrase!r} is not positional; self-taught exemplars know "
                        f"{', '.join(sorted(POSITIONAL))}") from None


def positional_triplets(prompt: str) -> list[tuple[str, str, str]]:
    """Every (A, R, B) a prompt states with a positional phrase (the longest match wins), read as
    `RelationRectifier.prompt_embeds` reads prompts: "there is a panda below desk" -> panda, below, desk."""
    from rrnet.prompt_parser import parse_relations

    return [tuple(t) for t in parse_relations(prompt, {phrase: phrase for phrase in POSITIONAL})]


def relation_folder_name(a: str, relation: str, b: str) -> str:
    """The folder a relation is taught into inside a benchmark folder: "panda_below_desk"."""
    return "_".join(f"{a} {relation} {b}".split())


@dataclass(frozen=True)
class LocatorSettings:
    """Where the denoiser is asked: noise levels (shares of the training schedule's timesteps) and
    draws per level. Low levels see the objects' shapes; by 0.7 the layout is still being decided."""

    noise_levels: tuple[float, ...] = (0.2, 0.4, 0.6)
    draws: int = 4
    seed: int = 0
    batch: int = 32


def _image_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [-1, 1], as the VAE reads it."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().permute(0, 3, 1, 2) / 127.5 - 1


@torch.no_grad()
def object_contrast(pipe, images: np.ndarray, prompt_a: str, prompt_b: str,
                    settings: LocatorSettings = LocatorSettings()) -> torch.Tensor:
    """Per latent pixel, how much better `prompt_a` predicts the denoising target than `prompt_b`
    (summed over channels, noise levels and draws): positive where A is drawn, negative where B is.
    (N, h, w); the same noise for both prompts, so only the caption differs."""
    from diffusers import DDPMScheduler

    if sdxl.is_sdxl(pipe):
        raise RRNetError("self-taught exemplars support Stable Diffusion 1/2 pipelines (one text encoder)")
    noiser = DDPMScheduler.from_config(pipe.scheduler.config)  # noised as in training, whatever the sampler
    timesteps = [min(noiser.config.num_train_timesteps - 1, int(level * noiser.config.num_train_timesteps))
                 for level in settings.noise_levels]
    embeds = [encode_prompt(pipe, p).hidden.unsqueeze(0).to(pipe.device) for p in (prompt_a, prompt_b)]
    maps = []
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    for part in np.array_split(images, max(1, -(-len(images) // settings.batch))):
        latents, _ = latent_distribution(pipe, _image_tensor(part).to(pipe.device))
        contrast = torch.zeros(latents.shape[0], *latents.shape[2:], device=latents.device)
        for t in timesteps:
            steps = torch.full((latents.shape[0],), t, dtype=torch.long, device=latents.device)
            for _ in range(settings.draws):
                noise = torch.randn(latents.shape, generator=generator).to(latents.device)
                noisy = noiser.add_noise(latents, noise, steps)
                target = denoising_target(noiser, latents, noise, steps)
                error_a, error_b = ((unet_predict(pipe, noisy, steps, e.expand(len(noisy), -1, -1)) - target) ** 2
                                    for e in embeds)
                contrast += (error_b - error_a).sum(1)
        maps.append(contrast.cpu())
    return torch.cat(maps)


def region_centroids(contrast: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroids (x, y) in image pixels of the positive (A) and negative (B) parts of contrast maps."""
    n, h, w = contrast.shape
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * height / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * width / w

    def centroid(weight: torch.Tensor) -> torch.Tensor:
        total = weight.sum((1, 2)).clamp(min=1e-12)
        return torch.stack([(weight.sum(1) * xs).sum(1) / total, (weight.sum(2) * ys).sum(1) / total], dim=1)

    return centroid(contrast.clamp(min=0)), centroid((-contrast).clamp(min=0))


@dataclass(frozen=True)
class LayoutReading:
    """One image's reading: the two objects' centroids and the layout ("ARB", "BRA" or None: unclear)."""

    centroid_a: tuple[float, float]
    centroid_b: tuple[float, float]
    layout: str | None


def read_layouts(pipe, images: np.ndarray, a: str, relation: str, b: str, margin: float = 0.15,
                 object_template: str = OBJECT_TEMPLATE, settings: LocatorSettings = LocatorSettings()
                 ) -> list[LayoutReading]:
    """Which of "A R B" and "B R A" each image shows, by the denoiser's own object regions; a layout
    whose centroids lie less than `margin` of the image apart along the axis, or further apart
    across it than along it, is unclear (None)."""
    axis, a_first = relation_layout(relation)
    height, width = images.shape[1:3]
    contrast = object_contrast(pipe, images, object_template.format(obj=a), object_template.format(obj=b), settings)
    ca, cb = region_centroids(contrast, height, width)
    along, across = (0, 1) if axis == "x" else (1, 0)
    size = width if axis == "x" else height
    readings = []
    for pa, pb in zip(ca.tolist(), cb.tolist()):
        gap = pb[along] - pa[along]  # > 0: A comes first (top / left)
        layout = None
        if abs(gap) >= margin * size and abs(gap) > abs(pb[across] - pa[across]):
            layout = "ARB" if (gap > 0) == a_first else "BRA"
        readings.append(LayoutReading(tuple(pa), tuple(pb), layout))
    return readings


@dataclass
class SelfTaughtRecord:
    """What went into a self-taught folder: counts, sampling and the reading of every sample."""

    triplet: tuple[str, str, str]
    prompts: tuple[str, str]
    samples: int
    kept: dict[str, int]
    unclear: int
    seed: int
    steps: int
    guidance_scale: float
    margin: float
    readings: list[dict]


def _sampler(pipe, steps: int, guidance: float) -> Callable[[str, int, int], np.ndarray]:
    from rrnet.generate import prompt_embeddings, sample_arrays

    def sample(prompt: str, n: int, seed: int) -> np.ndarray:
        with torch.no_grad():
            embeds = prompt_embeddings(pipe, prompt, None, None)
        return sample_arrays(pipe, embeds, n, seed, steps, guidance, batch=n)

    return sample


def check_teach_settings(n_images: int, max_samples: int, prompt_template: str, object_template: str,
                         prefix: str = "") -> None:
    """The counts and caption templates of a self-taught folder, checked before any model work
    (`prefix`: "--" names them as the command's flags)."""
    if n_images < 1:
        raise DataError(f"{prefix}num_images must be at least 1, got {n_images}")
    if max_samples < 2 * n_images:
        raise DataError(f"{prefix}max_samples {max_samples} is below 2 x {prefix}num_images ({2 * n_images})")
    for name, template, keys in (("prompt_template", prompt_template, ("a", "relation", "b")),
                                 ("object_template", object_template, ("obj",))):
        try:
            template.format(**{k: "x" for k in keys})
        except (KeyError, IndexError, ValueError):
            raise DataError(f"{prefix}{name} {template!r} may name only {', '.join('{' + k + '}' for k in keys)}") from None


def self_taught_folder(pipe, a: str, relation: str, b: str, output_dir: str | Path, n_images: int = 5,
                       max_samples: int = 96, batch: int = 16, seed: int = 0, steps: int = 30,
                       guidance_scale: float = 7.5, margin: float = 0.15, prompt_template: str = PROMPT_TEMPLATE,
                       object_template: str = OBJECT_TEMPLATE, settings: LocatorSettings = LocatorSettings()) -> Path:
    """Write `output_dir`, a relation folder in the official layout drawn and labelled by `pipe`.

    Samples "A R B" and "B R A" in turns (`batch` images each, seeds counting up from `seed`) until
    each layout has `n_images` clear readings or `max_samples` images are drawn, then draws
    `n_images` single-object images of each object. The folder appears complete or not at all,
    with `self_taught.json` recording every reading."""
    relation_layout(relation)
    if " ".join(a.split()).casefold() == " ".join(b.split()).casefold():
        raise DataError(f"a relation needs two different objects, got {a!r} twice")
    check_teach_settings(n_images, max_samples, prompt_template, object_template)
    prompts = (prompt_template.format(a=a, relation=relation, b=b), prompt_template.format(a=b, relation=relation, b=a))
    sample = _sampler(pipe, steps, guidance_scale)
    kept: dict[str, list[np.ndarray]] = {"ARB": [], "BRA": []}
    readings: list[dict] = []
    drawn = 0
    while min(len(v) for v in kept.values()) < n_images and drawn < max_samples:
        prompt = prompts[(drawn // batch) % 2]
        count = min(batch, max_samples - drawn)
        images = sample(prompt, count, seed + drawn)
        for k, (image, reading) in enumerate(zip(images, read_layouts(pipe, images, a, relation, b, margin,
                                                                      object_template, settings))):
            readings.append({"prompt": prompt, "seed": seed + drawn + k, **asdict(reading)})
            if reading.layout is not None:
                kept[reading.layout].append(image)
        drawn += count
    short = {layout: len(v) for layout, v in kept.items() if len(v) < n_images}
    if short:
        got = ", ".join(f"{len(kept[k])} {prompts[0] if k == 'ARB' else prompts[1]!r}" for k in short)
        raise DataError(f"self-taught {prompts[0]!r}: only {got} images read clearly in {drawn} samples "
                        f"(need {n_images}; raise max_samples, or the model does not draw that layout)")
    objects = {obj: sample(object_template.format(obj=obj), n_images, seed + max_samples + 1000 * i)
               for i, obj in enumerate(dict.fromkeys((a, b)))}
    record = SelfTaughtRecord((a, relation, b), prompts, drawn, {k: len(v) for k, v in kept.items()},
                              sum(r["layout"] is None for r in readings), seed, steps, guidance_scale, margin, readings)
    index = {"A": a, "R": relation, "B": b, "ARB": prompts[0], "BRA": prompts[1], "ARB_dir": prompts[0],
             "BRA_dir": prompts[1], "category": "position"}

    def write(tmp: Path) -> None:
        folders = {prompts[0]: kept["ARB"][:n_images], prompts[1]: kept["BRA"][:n_images], **objects}
        for sub, images in folders.items():
            for k, image in enumerate(images, 1):
                save_image_atomic(Image.fromarray(image), tmp / sub / f"{k}.png")
        atomic_write_text(tmp / RECORD_FILE, json.dumps(asdict(record), indent=1) + "\n")
        atomic_write_text(tmp / "index.json", json.dumps(index, indent=4) + "\n")

    with folder_lock(output_dir):
        folder = atomic_write_folder(output_dir, write)
    log.info("self-taught %s: %d + %d images kept of %d samples (%d unclear)", prompts[0], len(kept["ARB"]),
             len(kept["BRA"]), drawn, record.unclear)
    return folder
