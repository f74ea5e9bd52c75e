"""The baselines as evaluation methods (`rrnet.eval.methods.Method`), one checkpoint per relation.

Each finds `root/<relation name>/baseline.json` (or `root/baseline.json` for a single relation),
changes the pipeline inside `applied` the way a user of that baseline would (tuned text-encoder
weights / `load_textual_inversion` plus prompts rewritten to the learned tokens /
`load_lora_weights`) and restores it on exit. Each has one unnamed setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from rrnet.backbones.sdxl import refuse_sdxl
from rrnet.baselines.checkpoint import RECORD_NAME, read_record
from rrnet.baselines.config import normalize_kind
from rrnet.baselines.lora import lora_applied
from rrnet.baselines.personalized import personalized_applied
from rrnet.baselines.textual_inversion import (
    prompt_side,
    textual_inversion_applied,
    with_token,
)
from rrnet.data import RelationSpec
from rrnet.errors import CheckpointError
from rrnet.eval.methods import Conditioner, find_relation_checkpoint
from rrnet.eval.provenance import files_digest
from rrnet.generate import prompt_embeddings


class _BaselineMethod:
    """Shared parts: the checkpoint root, one setting, the description, checkpoint lookup."""

    kind = ""

    def __init__(self, root: str | Path, name: str | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise CheckpointError(f"{self.root}: {self.kind} checkpoint folder not found")
        self.name = name or self.kind

    def settings(self) -> list[float | None]:
        return [None]

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "baseline": self.kind, "checkpoints": str(self.root)}

    def checkpoint(self, spec: RelationSpec) -> Path:
        return find_relation_checkpoint(self.root, spec, RECORD_NAME)

    def check(self, spec: RelationSpec) -> None:
        """The relation's checkpoint record is readable and of this kind (before anything loads)."""
        read_record(self.checkpoint(spec), self.kind)

    def fingerprint(self, spec: RelationSpec) -> str:
        """Content hash of the checkpoint's files (its training log and training states aside)."""
        folder = self.checkpoint(spec)
        files = [p for p in folder.rglob("*") if p.is_file() and _defines_checkpoint(p.relative_to(folder))]
        return files_digest(folder, files)


def _defines_checkpoint(relative: Path) -> bool:
    top = relative.parts[0]
    return not (top.startswith(".") or top.startswith("checkpoint-") or top == "train_log.jsonl")


def _plain_conditioner(pipe) -> Conditioner:
    """The pipeline's own prompt encoding (with whatever the baseline changed in the pipeline)."""
    return lambda prompt, setting: prompt_embeddings(pipe, prompt, None, None)


class PersonalizedMethod(_BaselineMethod):
    """Personalized diffusion: the tuned text encoder encodes every prompt (and the empty one)."""

    kind = "personalized"

    @contextmanager
    def applied(self, pipe, spec: RelationSpec) -> Iterator[Conditioner]:
        refuse_sdxl(pipe, f"the {self.kind} baseline")
        with personalized_applied(pipe, self.checkpoint(spec)), torch.no_grad():
            yield _plain_conditioner(pipe)


class TextualInversionMethod(_BaselineMethod):
    """Textual Inversion: the relation word becomes the learned token of the prompt's direction."""

    kind = "textual_inversion"

    @contextmanager
    def applied(self, pipe, spec: RelationSpec) -> Iterator[Conditioner]:
        refuse_sdxl(pipe, f"the {self.kind} baseline")
        with textual_inversion_applied(pipe, self.checkpoint(spec)) as record, torch.no_grad():
            tokens, word = record["tokens"], record.get("replaces", spec.relation)
            shared = len(set(tokens.values())) == 1

            def condition(prompt: str, setting: float | None) -> torch.Tensor:
                token = tokens["prompt"] if shared else tokens[prompt_side(prompt, spec)]
                return prompt_embeddings(pipe, with_token(prompt, word, token), None, None)

            yield condition


class LoRAMethod(_BaselineMethod):
    """UNet update: the LoRA adapters act inside the UNet; prompts are encoded as usual."""

    kind = "lora"

    @contextmanager
    def applied(self, pipe, spec: RelationSpec) -> Iterator[Conditioner]:
        refuse_sdxl(pipe, f"the {self.kind} baseline")
        with lora_applied(pipe, self.checkpoint(spec)), torch.no_grad():
            yield _plain_conditioner(pipe)


METHODS: dict[str, type[_BaselineMethod]] = {
    "personalized": PersonalizedMethod,
    "textual_inversion": TextualInversionMethod,
    "lora": LoRAMethod,
}


def load_method(kind: str, root: str | Path, name: str | None = None) -> _BaselineMethod:
    """The evaluation method of baseline `kind` reading checkpoints under `root`."""
    return METHODS[normalize_kind(kind)](root, name=name)
