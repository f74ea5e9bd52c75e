"""The EOT experiments: generate with the EOT token masked out (Fig. 2) or taken from another prompt (App. C).

Every variant of a prompt is sampled with the same seeds (image k uses seed + k, as in
`rrnet.generate`), so kept / masked / swapped images differ only by the edit.

* Masking (`eot_masking`): the image queries of every cross-attention layer may not attend to
  the masked key positions of the prompt (see `rrnet.analysis.attention`); the embedding itself
  is untouched. `mode="eot"` masks the first EOT position, the single vector the paper studies
  and RRNet edits; `mode="eot_and_padding"` also masks every position after it. After EOT the
  causal text encoder's padding states (SD 2.x pads with "!", SD 1.x with more EOT tokens) have
  read the whole sentence too, so they can stand in for a masked EOT: the second mode removes
  all sentence-level summaries. The unconditional branch is never masked.
* Swapping (`eot_swap`): prompt X is generated with its EOT hidden state replaced by prompt Y's
  EOT hidden state (first EOT of each, found by each prompt's own tokenizer output).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from rrnet.analysis.attention import masked_cross_attention
from rrnet.analysis.judging import judge_for_prompt
from rrnet.analysis.records import relative, sampling_record, save_variant, write_json
from rrnet.data import save_image_atomic
from rrnet.errors import PromptError, RRNetError
from rrnet.generate import (
    GenerationSettings,
    prompt_embeddings,
    prompt_folder,
    sample_images,
)
from rrnet.grid import image_grid, mosaic
from rrnet.rectifier import encode_prompt
from rrnet.tokens import PromptTokens, tokenize_prompt

MASK_MODES = ("eot", "eot_and_padding")
MASK_FILE = "eot_mask.json"
SWAP_FILE = "eot_swap.json"
KEPT, MASKED = "kept", "masked"
ORIGINAL, SWAPPED, SOURCE = "original", "eot_swapped", "eot_source"


@dataclass
class EOTResult:
    """Where everything went: `images[i][variant]` lists row i's PNGs; `record` is the JSON."""

    output_dir: Path
    images: list[dict[str, list[Path]]] = field(default_factory=list)
    grid: Path | None = None
    record: Path | None = None


def eot_positions(tokens: PromptTokens, mode: str = "eot") -> list[int]:
    """Key positions to mask: the first EOT, or the first EOT and every (padding) position after it."""
    if mode == "eot":
        return [tokens.eot_index]
    if mode == "eot_and_padding":
        return list(range(tokens.eot_index, len(tokens.input_ids)))
    raise RRNetError(f"unknown EOT mask mode {mode!r}; choose one of {', '.join(MASK_MODES)}")


def masked_images(pipe, prompt: str, settings: GenerationSettings, mode: str = "eot", output_type: str = "pil"):
    """`sample_images` for `prompt` with its EOT key position(s) masked out of cross-attention."""
    positions = eot_positions(tokenize_prompt(pipe.tokenizer, prompt), mode)
    embeds = prompt_embeddings(pipe, prompt, None, None)
    with masked_cross_attention(pipe.unet, embeds, positions) as record:
        images = sample_images(pipe, embeds, settings, output_type=output_type)
    if record.masked_rows == 0:
        raise RRNetError("the EOT mask never reached the UNet's cross-attention (the UNet transforms the prompt embeddings?)")
    return images


def eot_swapped_embeds(pipe, prompt: str, eot_from: str) -> torch.Tensor:
    """`prompt_embeds` (1, L, D) of `prompt` whose EOT hidden state is replaced by `eot_from`'s."""
    x, y = encode_prompt(pipe, prompt), encode_prompt(pipe, eot_from)
    hidden = x.hidden.clone()
    hidden[x.tokens.eot_index] = y.eot
    return hidden.unsqueeze(0).to(pipe.text_encoder.dtype)


def _cell(images: list[Image.Image]) -> Image.Image:
    return mosaic(images[:4]) if len(images) > 1 else images[0]


def _finish(result: EOTResult, rows: list[list[Image.Image]], labels: list[str], columns: list[str], name: str, record: dict) -> EOTResult:
    """Write the grid (one mosaic of up to 4 samples per cell) and the JSON record."""
    result.grid = save_image_atomic(image_grid(rows, labels, columns), result.output_dir / "grid.png")
    result.record = write_json(result.output_dir / name, record)
    return result


def eot_masking(
    pipe,
    prompts: Sequence[str],
    output_dir: str | Path,
    settings: GenerationSettings | None = None,
    mode: str = "eot",
    triplet: tuple[str, str, str] | None = None,
    progress: bool = True,
    metadata: dict | None = None,
) -> EOTResult:
    """Generate each prompt with its EOT kept and masked (same seeds); write PNGs, a grid and `eot_mask.json`."""
    if not prompts:
        raise PromptError("no prompts given")
    settings = settings or GenerationSettings()
    if mode not in MASK_MODES:
        raise RRNetError(f"unknown EOT mask mode {mode!r}; choose one of {', '.join(MASK_MODES)}")
    result = EOTResult(output_dir=Path(output_dir))
    entries, grid_rows = [], []
    for index, prompt in enumerate(tqdm(list(prompts), desc="mask EOT", disable=not progress)):
        tokens = tokenize_prompt(pipe.tokenizer, prompt)
        variants = {
            KEPT: sample_images(pipe, prompt_embeddings(pipe, prompt, None, None), settings),
            MASKED: masked_images(pipe, prompt, settings, mode),
        }
        folder = result.output_dir / prompt_folder(index, prompt)
        paths = {name: save_variant(images, folder / name) for name, images in variants.items()}
        result.images.append(paths)
        grid_rows.append([_cell(images) for images in variants.values()])
        entries.append({
            "prompt": prompt, "eot_index": tokens.eot_index, "masked_positions": eot_positions(tokens, mode),
            "images": {name: relative(p, result.output_dir) for name, p in paths.items()},
            "judged": {name: judge_for_prompt(pipe.tokenizer, images, prompt, triplet) for name, images in variants.items()},
        })
    record = {"analysis": "eot_mask", "mode": mode, "masked_in": "cross-attention keys of the conditional branch",
              "triplet": list(triplet) if triplet else None, "settings": sampling_record(settings),
              "prompts": entries, "grid": "grid.png", **(metadata or {})}
    return _finish(result, grid_rows, list(prompts), [KEPT, MASKED], MASK_FILE, record)


def eot_swap(
    pipe,
    pairs: Sequence[tuple[str, str]],
    output_dir: str | Path,
    settings: GenerationSettings | None = None,
    triplet: tuple[str, str, str] | None = None,
    progress: bool = True,
    metadata: dict | None = None,
) -> EOTResult:
    """For each (X, Y): generate X, X with Y's EOT, and Y (same seeds); write PNGs, a grid and `eot_swap.json`."""
    if not pairs:
        raise PromptError("no (prompt, eot_from) pairs given")
    settings = settings or GenerationSettings()
    result = EOTResult(output_dir=Path(output_dir))
    entries, grid_rows = [], []
    for index, (prompt, eot_from) in enumerate(tqdm(list(pairs), desc="swap EOT", disable=not progress)):
        variants = {
            ORIGINAL: sample_images(pipe, prompt_embeddings(pipe, prompt, None, None), settings),
            SWAPPED: sample_images(pipe, eot_swapped_embeds(pipe, prompt, eot_from), settings),
            SOURCE: sample_images(pipe, prompt_embeddings(pipe, eot_from, None, None), settings),
        }
        folder = result.output_dir / prompt_folder(index, prompt)
        paths = {name: save_variant(images, folder / name) for name, images in variants.items()}
        result.images.append(paths)
        grid_rows.append([_cell(images) for images in variants.values()])
        judged_against = {ORIGINAL: prompt, SWAPPED: prompt, SOURCE: eot_from}
        entries.append({
            "prompt": prompt, "eot_from": eot_from,
            "eot_index": tokenize_prompt(pipe.tokenizer, prompt).eot_index,
            "eot_from_index": tokenize_prompt(pipe.tokenizer, eot_from).eot_index,
            "images": {name: relative(p, result.output_dir) for name, p in paths.items()},
            "judged": {name: judge_for_prompt(pipe.tokenizer, images, judged_against[name], triplet) for name, images in variants.items()},
        })
    record = {"analysis": "eot_swap", "triplet": list(triplet) if triplet else None, "settings": sampling_record(settings),
              "judged_against": {ORIGINAL: "prompt", SWAPPED: "prompt", SOURCE: "eot_from"},
              "pairs": entries, "grid": "grid.png", **(metadata or {})}
    labels = [f"{x}  [EOT: {y}]" for x, y in pairs]
    return _finish(result, grid_rows, labels, [ORIGINAL, SWAPPED, SOURCE], SWAP_FILE, record)
