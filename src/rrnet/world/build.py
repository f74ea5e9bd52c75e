"""Build the mini world's backbone: tokenizer -> text encoder -> autoencoder -> denoiser -> folder.

Every stage is reproducible from the recipe's seed and resumable. A finished stage is written
into a temporary folder, closed with `stage.json`, and renamed into `{build_dir}/{stage}`; a
folder without that marker (a run killed while writing it) counts as not finished. The
autoencoder and denoiser checkpoint every `checkpoint_every` steps and a rerun continues from the
last checkpoint. The result is an ordinary diffusers folder that
`StableDiffusionPipeline.from_pretrained` loads, with the recipe and sampling defaults in
`world.json`; it replaces an existing folder by a swap, so a killed build leaves the old model.
"""

from __future__ import annotations

import json
from pathlib import Path

from rrnet.atomic import atomic_write_folder, atomic_write_text, remove_leftovers
from rrnet.errors import RRNetError
from rrnet.locking import folder_lock
from rrnet.training_state import has_state
from rrnet.world.image_models import first_phase, make_scheduler, train_unet, train_vae, tuning_phase
from rrnet.world.recipe import WorldRecipe
from rrnet.world.record import WORLD_FILE, world_info
from rrnet.world.text_model import eot_cosines, train_text_encoder
from rrnet.world.tokenizer import world_tokenizer

STAGE_MARKER = "stage.json"


def stage_done(folder: Path) -> bool:
    """A stage is finished only when its folder carries the marker written after all its files."""
    return (folder / STAGE_MARKER).is_file()


def _write_stage(folder: Path, save, info: dict) -> None:
    def write(tmp: Path) -> None:
        save(tmp)
        atomic_write_text(tmp / STAGE_MARKER, json.dumps(info, indent=2) + "\n")

    atomic_write_folder(folder, write)


def _load_stage_model(cls, folder: Path):
    """A finished stage's model. from_pretrained records the build folder as `_name_or_path`, which
    save_pretrained would write into the model's config: a resumed build must write the same files
    as an unbroken one."""
    from diffusers.configuration_utils import FrozenDict

    model = cls.from_pretrained(folder).eval().requires_grad_(False)
    model._internal_dict = FrozenDict({k: v for k, v in model.config.items() if k != "_name_or_path"})
    return model


def _text_stage(recipe: WorldRecipe, tokenizer, work: Path, progress: bool):
    from transformers import CLIPTextModel

    folder = work / "text_encoder"
    if stage_done(folder):
        terms = json.loads((folder / STAGE_MARKER).read_text(encoding="utf-8"))["terms"]
        return CLIPTextModel.from_pretrained(folder).eval().requires_grad_(False), terms
    encoder, terms = train_text_encoder(tokenizer, recipe, progress)
    _write_stage(folder, lambda tmp: encoder.save_pretrained(tmp), {"terms": terms})
    return encoder, terms


def _vae_stage(recipe: WorldRecipe, work: Path, progress: bool):
    from diffusers import AutoencoderKL

    folder = work / "vae"
    if stage_done(folder):
        return _load_stage_model(AutoencoderKL, folder)
    vae = train_vae(recipe, work, progress)
    _write_stage(folder, lambda tmp: vae.save_pretrained(tmp), {"steps": recipe.vae_steps})
    return vae


def _unet_stage(recipe: WorldRecipe, vae, text_encoder, tokenizer, work: Path, progress: bool):
    """The denoiser's first phase (EMA weights), kept as a stage so that tuning can start from it."""
    from diffusers import UNet2DConditionModel

    folder = work / "unet"
    if stage_done(folder):
        steps = json.loads((folder / STAGE_MARKER).read_text(encoding="utf-8"))["steps"]
        if steps == recipe.unet_steps:
            return _load_stage_model(UNet2DConditionModel, folder)
        if not has_state(work / first_phase(recipe).checkpoint):
            raise RRNetError(f"{folder}: the denoiser's first phase ({steps} steps) came from another model and cannot be "
                             f"trained on to {recipe.unet_steps} steps here; keep unet_steps={steps}")
    unet = train_unet(recipe, vae, text_encoder, tokenizer, work, progress)
    _write_stage(folder, lambda tmp: unet.save_pretrained(tmp), {"steps": recipe.unet_steps})
    return unet


def _check_source(source: Path, recipe: WorldRecipe) -> dict:
    """The `world.json` of a model whose finished stages a build may take: same recipe up to tuning."""
    source_info = world_info(source)
    if source_info is None:
        raise RRNetError(f"{source}: not a mini-world model (no {WORLD_FILE})")
    changed = _changed_fields(recipe.before_tuning(), WorldRecipe.from_dict(source_info["recipe"]).to_dict(), RECORD_ONLY)
    if changed:
        raise RRNetError(f"{source}: was built from another recipe (differs in {', '.join(changed)}); "
                         "only the denoiser's tuning phase may differ")
    return source_info


def _seed_stages(work: Path, source: Path, source_info: dict, recipe: WorldRecipe) -> None:
    """Take the text encoder, autoencoder and first denoiser phase from a model built from this
    recipe (`source_info`: its `world.json`, checked by `_check_source`)."""
    import shutil

    markers = {"text_encoder": {"terms": source_info.get("text_encoder_terms", {})},
               "vae": {"steps": recipe.vae_steps}, "unet": {"steps": recipe.unet_steps}}
    for stage, info in markers.items():
        if not stage_done(work / stage):
            _write_stage(work / stage, lambda tmp, stage=stage: shutil.copytree(source / stage, tmp, dirs_exist_ok=True), info)


def _changed_fields(ours: dict, theirs: dict, allowed: set[str]) -> list[str]:
    """Fields of `ours` whose JSON value differs in `theirs`, other than the `allowed` ones."""
    return sorted(k for k, v in ours.items() if k not in allowed and json.loads(json.dumps(v)) != json.loads(json.dumps(theirs.get(k))))


# Fields that only say how a build is recorded or sampled.
RECORD_ONLY = {"checkpoint_every", "sample_steps", "guidance_scale", "sampler", "notes"}
# Fields that can change between a run and its resumption: more training, or how it is recorded.
RESUMABLE_CHANGES = {"text_steps", "vae_steps", "unet_steps", "tune_steps", *RECORD_ONLY}


def _check_same_recipe(work: Path, recipe: WorldRecipe) -> None:
    """Resuming with another recipe would mix two models: only longer training is allowed."""
    saved_path = work / "recipe.json"
    if not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    changed = _changed_fields(recipe.to_dict(), saved, RESUMABLE_CHANGES)
    if changed:
        raise RRNetError(f"{work}: was started with another recipe (differs in {', '.join(changed)}); remove it to start over")


def build_world_backbone(
    output_dir: str | Path,
    recipe: WorldRecipe | None = None,
    build_dir: str | Path | None = None,
    progress: bool = True,
    from_model: str | Path | None = None,
) -> Path:
    """Train (or resume) every part and write the diffusers folder to `output_dir`.

    With `from_model` (a world model built from the same recipe up to the denoiser's tuning
    phase), its text encoder, autoencoder and denoiser are taken as the finished first stages and
    only the tuning phase is trained. The stages seed torch's global stream (their checkpoints
    save and restore it); the caller's stream is put back afterwards. The output and build
    folders are locked for the run (one builder at a time), and temporaries a killed build left
    behind are removed first."""
    import torch

    output_dir = Path(output_dir)
    recipe = recipe or WorldRecipe()
    source = None
    if from_model is not None:  # checked before anything is created
        source = Path(from_model), _check_source(Path(from_model), recipe)
    work = Path(build_dir) if build_dir else output_dir.parent / f"{output_dir.name}.build"
    with folder_lock(output_dir), folder_lock(work), torch.random.fork_rng(devices=[]):
        remove_leftovers(work)
        remove_leftovers(output_dir.parent, of=output_dir.name)
        return _build(output_dir, recipe, work, progress, source)


def _build(output_dir: Path, recipe: WorldRecipe, work: Path, progress: bool, source: tuple[Path, dict] | None) -> Path:
    from diffusers import StableDiffusionPipeline

    work.mkdir(parents=True, exist_ok=True)
    _check_same_recipe(work, recipe)
    if source is not None:
        _seed_stages(work, *source, recipe)
    atomic_write_text(work / "recipe.json", json.dumps(recipe.to_dict(), indent=2))
    tokenizer = world_tokenizer()
    text_encoder, text_terms = _text_stage(recipe, tokenizer, work, progress)
    vae = _vae_stage(recipe, work, progress)
    unet = _unet_stage(recipe, vae, text_encoder, tokenizer, work, progress)
    if recipe.tune_steps:
        unet = train_unet(recipe, vae, text_encoder, tokenizer, work, progress, start=unet, phase=tuning_phase(recipe))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=make_scheduler(recipe),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    info = {"world_version": 2, "recipe": recipe.to_dict(),
            "sampling": {"num_inference_steps": recipe.sample_steps, "guidance_scale": recipe.guidance_scale,
                         "sampler": recipe.sampler},
            "text_encoder_terms": text_terms, "eot_cosines": eot_cosines(text_encoder, tokenizer, recipe)}

    def save(tmp: Path) -> None:
        pipe.save_pretrained(tmp, safe_serialization=True)
        atomic_write_text(tmp / WORLD_FILE, json.dumps(info, indent=2) + "\n")

    atomic_write_folder(output_dir, save)
    return output_dir
