"""Input checks that run before any model loads: a mistake costs one line, not minutes of loading.

Numbers from the command line are checked by their argparse types (finite, in range), the output
folder for being a writable folder, the device for existing, a model folder for being a
diffusers folder without pickled weights.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
import math
import os
from pathlib import Path

from rrnet.errors import RRNetError

MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; image k uses seed + k
MAX_RESOLUTION = 4096  # pixels per side; SD models are trained at 512-1024
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


# ---------------------------------------------------------------------------------------------
# argparse types: a bad number is one `rrnet: error:` line, never a traceback
# ---------------------------------------------------------------------------------------------


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (alpha may be negative)."""
    return _number(text, float)


def positive_float(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or positive, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def int_in(low: int, high: int):
    """An integer type for argparse within [low, high] (a width of 10**9 would only fail as a huge allocation)."""
    def parse(text: str) -> int:
        value = _number(text, int)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high}, got {text!r}")
        return value

    parse.__name__ = f"integer from {low} to {high}"
    return parse


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    value = _number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number from 0 up to (not including) 1, got {text!r}")
    return value


def seed(text: str) -> int:
    value = _number(text, int)
    if not 0 <= value <= MAX_SEED - 1_000_000:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {MAX_SEED - 1_000_000}, got {text!r}")
    return value


def resolution(text: str) -> int:
    value = _number(text, int)
    if value < 8 or value > MAX_RESOLUTION or value % 8:
        raise argparse.ArgumentTypeError(f"must be a multiple of 8 from 8 to {MAX_RESOLUTION}, got {text!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Folders, devices, models
# ---------------------------------------------------------------------------------------------


def check_output_dir(path: str | Path, flag: str = "--output_dir") -> Path:
    """The output folder is a folder (or can be made) and writable: checked before loading."""
    path = Path(path).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise RRNetError(f"{flag} {path} is a file, not a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RRNetError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RRNetError(f"{flag} {path}: cannot write into {existing}")
    return path


def check_device(device: str | None) -> None:
    """A device torch knows and this machine has (`cuda` without CUDA is refused here)."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise RRNetError(f"unknown --device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise RRNetError(f"--device {device}: CUDA is not available on this machine")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise RRNetError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise RRNetError(f"--device {device}: MPS is not available on this machine")
    elif parsed.type != "cpu":
        raise RRNetError(f"unsupported --device {device!r}; use cpu, cuda, cuda:N or mps")


def check_model_folder(model: str) -> None:
    """A local model is a diffusers folder whose weights are safetensors: loading never unpickles."""
    path = Path(model).expanduser()
    if not path.exists():
        if model.startswith((".", "/", "~")) or model.count("/") > 1:
            raise RRNetError(f"model folder {model} not found")
        return  # a hub id
    if not path.is_dir() or not (path / "model_index.json").is_file():
        raise RRNetError(f"{model}: not a diffusers model folder (no model_index.json)")
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RRNetError(f"{path / 'model_index.json'}: unreadable ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(index, dict):
        raise RRNetError(f"{path / 'model_index.json'}: not a diffusers model index")
    for component, spec in index.items():
        folder = path / component
        if component.startswith("_") or not isinstance(spec, list) or not folder.is_dir():
            continue
        files = [f for f in folder.iterdir() if f.is_file()]
        pickled = [f for f in files if f.suffix in PICKLE_SUFFIXES]
        if pickled and not any(f.suffix == ".safetensors" for f in files):
            raise RRNetError(f"{pickled[0]}: pickled weights; rrnet loads safetensors only "
                             "(convert the model with diffusers' save_pretrained(safe_serialization=True))")


def _component_config(model: str, component: str) -> dict | None:
    try:
        config = json.loads((Path(model).expanduser() / component / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def model_text_width(model: str) -> int | None:
    """The text encoder width of a local model folder (None when unknown without loading it)."""
    width = (_component_config(model, "text_encoder") or {}).get("hidden_size")
    return width if isinstance(width, int) else None


def model_text_conditioning(model: str) -> tuple[list[int], int | None] | None:
    """A local model folder's text widths, in `prompt_embeds` order, and its pooled width (SDXL's
    text_encoder_2 projection; None for SD 1.x / 2.x); None when unknown without loading it."""
    width = model_text_width(model)
    if width is None:
        return None
    if not (Path(model).expanduser() / "text_encoder_2").is_dir():
        return [width], None
    second = _component_config(model, "text_encoder_2") or {}
    width_2, pooled = second.get("hidden_size"), second.get("projection_dim")
    if not (isinstance(width_2, int) and isinstance(pooled, int)):
        return None
    return [width, width_2], pooled


def check_rectifier_fits(rectifier, model: str) -> None:
    """A rectifier for other text encoders (another width, SD on SDXL or back) is refused before the model loads."""
    from rrnet.errors import CheckpointError
    from rrnet.rectifier import backbone_mismatch

    found = model_text_conditioning(model)
    problem = None if found is None else backbone_mismatch(rectifier.config, *found)
    if problem is not None:
        raise CheckpointError(problem)


def check_triplet(triplet) -> None:
    """--triplet A R B names three different words."""
    if triplet is None:
        return
    a, r, b = (" ".join(w.split()).casefold() for w in triplet)
    if not all((a, r, b)):
        raise RRNetError("--triplet words must not be empty")
    if a == b:
        raise RRNetError(f"--triplet names the same object twice ({triplet[0]!r}); a relation needs two objects")
    if r in (a, b):
        raise RRNetError(f"--triplet relation {triplet[1]!r} is also an object word")


def local_tokenizer(model: str):
    """The tokenizer of a local model folder (cheap to load), or None for a hub id."""
    folder = Path(model).expanduser() / "tokenizer"
    if not folder.is_dir():
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError):
        return None  # the pipeline's own loading reports a broken model


def check_prompts(model: str, specs, sentences: tuple[str, ...] = ()) -> None:
    """Every prompt fits the text encoder and holds its relation's words, as its tokenizer reads
    them: checked with the tokenizer alone, before the models load (local folders only)."""
    tokenizer = local_tokenizer(model)
    if tokenizer is None:
        return
    with quiet_transformers():  # its "sequence longer than 77" note would be a second line
        _check_prompts(tokenizer, specs, sentences)


def _check_prompts(tokenizer, specs, sentences) -> None:
    from rrnet.tokens import tokenize_prompt, word_positions

    for spec in specs:
        if hasattr(spec, "relations"):  # a prompt stating several relations (rrnet.data.scenes.SceneSpec)
            prompts = (spec.prompt, *spec.swapped_prompts)
            words = tuple(dict.fromkeys(word for triplet in spec.relations for word in triplet))
        else:
            prompts = (spec.prompt, spec.swapped_prompt)
            words = (spec.object_a, spec.relation, spec.object_b)
        for prompt in prompts:
            tokens = tokenize_prompt(tokenizer, prompt)
            for word in words:
                word_positions(tokenizer, tokens, word)
    for sentence in sentences:
        tokenize_prompt(tokenizer, sentence)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' warnings off inside the block (errors still show)."""
    from transformers.utils import logging as transformers_logging

    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(level)


def check_run(args) -> None:
    """The checks every model-loading command makes first: device, model folder, output folder."""
    check_device(getattr(args, "device", None))
    check_model_folder(args.model)
    if getattr(args, "output_dir", None) is not None:
        check_output_dir(args.output_dir)
