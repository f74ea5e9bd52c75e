"""Methods under evaluation: how a model is conditioned on a prompt for one relation.

The runner owns seeds, batching and files; a method only says which settings it has (the
alphas of a rectifier; one unnamed setting for the base model and baselines) and yields, for
one relation at a time, a function from (prompt, setting) to `prompt_embeds`. Methods that
change the pipeline itself (LoRA weights, learned tokens, a tuned text encoder) do so inside
`applied` and restore it on exit, so relations never see each other's weights.

A benchmark may also hold scenes (`SceneSpec`: one prompt stating several relations). A method
that can condition such prompts says so with `scenes = True` (the base model, a rectifier per
member, one generalist rectifier: each reads every relation from the prompt); the others are
refused for scene benchmarks before anything is sampled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from rrnet.backbones.sdxl import SDXLConditioning
from rrnet.data import RelationSpec
from rrnet.data.scenes import SceneSpec
from rrnet.errors import CheckpointError
from rrnet.generate import alpha_label, prompt_embeddings
from rrnet.rectifier_files import load_rectifier, rectifier_digest

Conditioner = Callable[[str, float | None], "torch.Tensor | SDXLConditioning"]  # SDXL: prompt and pooled embeddings


@runtime_checkable
class Method(Protocol):
    """`name` labels table rows; `describe()` is recorded with (and guards) generated images.

    Optional: `check(spec)` refuses a missing or damaged checkpoint before anything loads;
    `fingerprint(spec)` is a content hash of what produces this relation's images (checkpoint
    weights and config), which keys the image cache; `scenes = True` when `applied` (and `check`)
    also take a `SceneSpec`.
    """

    name: str

    def settings(self) -> list[float | None]: ...

    def describe(self) -> dict[str, Any]: ...

    def applied(self, pipe, spec: RelationSpec) -> Any:
        """Context manager yielding a `Conditioner` for this relation."""
        ...


def setting_label(setting: float | None) -> str:
    """Folder and table label of a setting: `base` or `alpha_0.6`."""
    return alpha_label(setting)


def check_reads_scene(rectifier, path: Path, spec: SceneSpec) -> None:
    """Refuse a rectifier that would not read every relation of every prompt of the scene: it would
    rectify only part of the prompt (or none of it) and the numbers would not measure it."""
    for prompt, relations in spec.prompt_relations():
        found = [(t.object_a, t.object_b) for t in rectifier.find_triplets(prompt)]
        if sorted(found) != sorted((a, b) for a, _, b in relations):
            known = ", ".join(sorted(rectifier.relation_phrases())) or "none"
            raise CheckpointError(f"{path}: reads {len(found)} of the {len(relations)} relations of scene "
                                  f"{spec.name}'s prompt {prompt!r} (it knows {known})")


@contextmanager
def scene_conditioner(pipe, rectifier) -> Iterator[Conditioner]:
    """Conditioning of a scene's prompts: every relation read from the prompt (checked by
    `check_reads_scene`), summed per relation or one joint graph as the rectifier was trained;
    no setting (None) is the base model."""
    rectifier.check_backbone(pipe)
    rectifier.to(pipe.device)

    def condition(prompt: str, setting: float | None) -> torch.Tensor:
        if setting is None:
            return prompt_embeddings(pipe, prompt, None, None)
        return rectifier.prompt_embeds(pipe, prompt, alpha=setting, strict=True)

    with torch.no_grad():
        yield condition


class BaseMethod:
    """The unmodified model: the text encoder's own embeddings."""

    name = "base"
    scenes = True

    def settings(self) -> list[float | None]:
        return [None]

    def describe(self) -> dict[str, Any]:
        return {"method": self.name}

    def check(self, spec: RelationSpec) -> None:
        return None

    def fingerprint(self, spec: RelationSpec) -> str:
        return ""

    @contextmanager
    def applied(self, pipe, spec: RelationSpec) -> Iterator[Conditioner]:
        with torch.no_grad():
            yield lambda prompt, setting: prompt_embeddings(pipe, prompt, None, None)


def find_relation_checkpoint(root: str | Path, spec: RelationSpec, marker: str) -> Path:
    """`root/<relation name>/` holding `marker`, or `root` itself when it holds one checkpoint."""
    root = Path(root)
    for candidate in (root / spec.name, root):
        if (candidate / marker).is_file():
            return candidate
    raise CheckpointError(f"{root}: no checkpoint for relation {spec.name!r} (expected {root / spec.name / marker})")


class RectifierMethod:
    """RRNet: a rectifier per relation (`rectifiers/<relation name>/`), at each alpha; for a scene,
    `rectifiers/<scene name>/` (e.g. trained on that scene folder) reads the relations from each prompt."""

    scenes = True

    def __init__(self, rectifiers: str | Path, alphas: tuple[float, ...], name: str = "rrnet") -> None:
        self.root = Path(rectifiers)
        if not self.root.is_dir():
            raise CheckpointError(f"{self.root}: rectifier folder not found")
        self.alphas = tuple(float(a) for a in alphas)
        self.name = name

    def settings(self) -> list[float | None]:
        return list(self.alphas)

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "rectifiers": str(self.root)}

    def checkpoint(self, spec: RelationSpec) -> Path:
        from rrnet.rectifier import CONFIG_NAME

        return find_relation_checkpoint(self.root, spec, CONFIG_NAME)  # the config is written last

    def check(self, spec: RelationSpec | SceneSpec) -> None:
        rectifier = load_rectifier(self.checkpoint(spec))
        if isinstance(spec, SceneSpec):
            check_reads_scene(rectifier, self.checkpoint(spec), spec)

    def fingerprint(self, spec: RelationSpec) -> str:
        return rectifier_digest(self.checkpoint(spec))

    @contextmanager
    def applied(self, pipe, spec: RelationSpec | SceneSpec) -> Iterator[Conditioner]:
        rectifier = load_rectifier(self.checkpoint(spec), device=pipe.device)
        if isinstance(spec, SceneSpec):
            with scene_conditioner(pipe, rectifier) as condition:
                yield condition
            return
        rectifier.check_backbone(pipe)
        triplet = (spec.object_a, spec.relation, spec.object_b)
        with torch.no_grad():
            yield lambda prompt, setting: prompt_embeddings(pipe, prompt, setting, rectifier, triplet)


class TransferMethod:
    """One rectifier applied to every relation (unseen objects, paper Sec. 4.4): the relation's
    own words fill the graph, so a rectifier trained on one object pair is tried on others. One
    relation's words per prompt: scenes are refused (use `GeneralistMethod`)."""

    scenes = False

    def __init__(self, rectifier: str | Path, alphas: tuple[float, ...], name: str = "rrnet_transfer") -> None:
        self.path = Path(rectifier)
        self.rectifier = load_rectifier(self.path)
        self.alphas = tuple(float(a) for a in alphas)
        self.name = name

    def settings(self) -> list[float | None]:
        return list(self.alphas)

    def describe(self) -> dict[str, Any]:
        trained = [[t.object_a, t.relation, t.object_b] for t in self.rectifier.known_triplets()]
        return {"method": self.name, "rectifier": str(self.path), "trained_on": trained}

    def check(self, spec: RelationSpec) -> None:
        return None  # loaded (and checked) when the method was made

    def fingerprint(self, spec: RelationSpec) -> str:
        return rectifier_digest(self.path)

    @contextmanager
    def applied(self, pipe, spec: RelationSpec) -> Iterator[Conditioner]:
        self.rectifier.check_backbone(pipe)
        self.rectifier.to(pipe.device)
        triplet = (spec.object_a, spec.relation, spec.object_b)
        with torch.no_grad():
            yield lambda prompt, setting: prompt_embeddings(pipe, prompt, setting, self.rectifier, triplet)



class GeneralistMethod(TransferMethod):
    """One generalist rectifier for every relation: it reads (A, R, B) from each prompt itself, and
    every relation of a scene's prompt (a rectifier trained with scenes: one joint graph; one
    trained on single relations: the per-relation adjustments summed)."""

    scenes = True

    def __init__(self, rectifier: str | Path, alphas: tuple[float, ...], name: str = "rrnet_generalist") -> None:
        super().__init__(rectifier, alphas, name)

    def check(self, spec: RelationSpec | SceneSpec) -> None:
        if isinstance(spec, SceneSpec):
            check_reads_scene(self.rectifier, self.path, spec)
            return
        for prompt in (spec.prompt, spec.swapped_prompt):  # it would otherwise pass the prompt through unchanged
            if self.rectifier.find_triplet(prompt) is None:
                known = ", ".join(sorted(self.rectifier.relation_phrases())) or "none"
                raise CheckpointError(f"{self.path}: finds no relation it knows ({known}) in {spec.name}'s prompt {prompt!r}")

    @contextmanager
    def applied(self, pipe, spec: RelationSpec | SceneSpec) -> Iterator[Conditioner]:
        if isinstance(spec, SceneSpec):
            with scene_conditioner(pipe, self.rectifier) as condition:
                yield condition
            return
        self.rectifier.check_backbone(pipe)
        self.rectifier.to(pipe.device)
        with torch.no_grad():
            yield lambda prompt, setting: prompt_embeddings(pipe, prompt, setting, self.rectifier, None)
