"""Build the mini world's backbone: tokenizer -> text encoder -> autoencoder -> denoiser -> folder.

Every stage is reproducible from the recipe's seed and resumable: finished stages are kept in
`{output}.build/`, the autoencoder and denoiser checkpoint every `checkpoint_every` steps, and a
rerun continues from the last checkpoint. The result is an ordinary diffusers folder that
`StableDiffusionPipeline.from_pretrained` loads, with the recipe in `world.json`.
"""

from __future__ import annotations

import json
from pathlib import Path


from rrnet.atomic import atomic_write_text
from rrnet.backbones.tiny import save_pipeline_atomic
from rrnet.errors import RRNetError
from rrnet.world.image_models import make_scheduler, train_unet, train_vae
from rrnet.world.recipe import WorldRecipe
from rrnet.world.text_model import eot_cosines, train_text_encoder
from rrnet.world.tokenizer import world_tokenizer

WORLD_FILE = "world.json"
SAMPLING = {"num_inference_steps": 25, "guidance_scale": 4.0}


def shipped_backbone() -> Path:
    """The mini-world backbone that ships with rrnet (built by `rrnet world build`)."""
    return Path(__file__).resolve().parent / "mini_sd"


def load_recipe(model_dir: str | Path) -> WorldRecipe:
    data = json.loads((Path(model_dir) / WORLD_FILE).read_text(encoding="utf-8"))
    return WorldRecipe.from_dict(data["recipe"])


def _text_stage(recipe: WorldRecipe, tokenizer, work: Path, progress: bool):
    from transformers import CLIPTextModel

    folder = work / "text_encoder"
    if (folder / "config.json").is_file():
        return CLIPTextModel.from_pretrained(folder).eval().requires_grad_(False), json.loads((work / "text_terms.json").read_text())
    encoder, terms = train_text_encoder(tokenizer, recipe, progress)
    encoder.save_pretrained(folder)
    atomic_write_text(work / "text_terms.json", json.dumps(terms))
    return encoder, terms


def _vae_stage(recipe: WorldRecipe, work: Path, progress: bool):
    from diffusers import AutoencoderKL

    folder = work / "vae"
    if (folder / "config.json").is_file():
        return AutoencoderKL.from_pretrained(folder).eval().requires_grad_(False)
    vae = train_vae(recipe, work, progress)
    vae.save_pretrained(folder)
    return vae


RESUMABLE_CHANGES = {"text_steps", "vae_steps", "unet_steps", "checkpoint_every"}


def _check_same_recipe(work: Path, recipe: WorldRecipe) -> None:
    """Resuming with another recipe would mix two models: only longer training is allowed."""
    saved_path = work / "recipe.json"
    if not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    changed = sorted(k for k, v in recipe.to_dict().items() if json.loads(json.dumps(v)) != saved.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        raise RRNetError(f"{work}: was started with another recipe (differs in {', '.join(changed)}); remove it to start over")


def build_world_backbone(
    output_dir: str | Path,
    recipe: WorldRecipe | None = None,
    build_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) every part and write the diffusers folder to `output_dir`."""
    from diffusers import StableDiffusionPipeline

    recipe = recipe or WorldRecipe()
    output_dir = Path(output_dir)
    work = Path(build_dir) if build_dir else output_dir.parent / f"{output_dir.name}.build"
    work.mkdir(parents=True, exist_ok=True)
    _check_same_recipe(work, recipe)
    atomic_write_text(work / "recipe.json", json.dumps(recipe.to_dict(), indent=2))
    tokenizer = world_tokenizer()
    text_encoder, text_terms = _text_stage(recipe, tokenizer, work, progress)
    vae = _vae_stage(recipe, work, progress)
    unet = train_unet(recipe, vae, text_encoder, tokenizer, work, progress)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=make_scheduler(recipe),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    save_pipeline_atomic(pipe, output_dir)
    info = {"recipe": recipe.to_dict(), "sampling": SAMPLING, "text_encoder_terms": text_terms,
            "eot_cosines": eot_cosines(text_encoder, tokenizer, recipe)}
    atomic_write_text(output_dir / WORLD_FILE, json.dumps(info, indent=2) + "\n")
    return output_dir
