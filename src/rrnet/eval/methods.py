"""Methods under evaluation: how a model is conditioned on a prompt for one relation.

The runner owns seeds, batching and files; a method only says which settings it has (the
alphas of a rectifier; one unnamed setting for the base model and baselines) and yields, for
one relation at a time, a function from (prompt, setting) to `prompt_embeds`. Methods that
change the pipeline itself (LoRA weights, learned tokens, a tuned text encoder) do so inside
`applied` and restore it on exit, so relations never see each other's weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from rrnet.data import RelationSpec
from rrnet.errors import CheckpointError
from rrnet.generate import alpha_label, prompt_embeddings
from rrnet.rectifier_files import load_rectifier, rectifier_digest

Conditioner = Callable[[str, float | None], torch.Tensor]


@runtime_checkable
class Method(Protocol):
    """`name` labels table rows; `describe()` is recorded with (and guards) generated images.

    Optional: `check(spec)` refuses a missing or damaged checkpoint before anything loads;
    `fingerprint(spec)` is a content hash of what produces this relation's images (checkpoint
    weights and config), which keys the image cache.
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


class BaseMethod:
    """The unmodified model: the text encoder's own embeddings."""

    name = "base"

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
    """RRNet: a rectifier per relation (`rectifiers/<relation name>/`), at each alpha."""

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

    def check(self, spec: RelationSpec) -> None:
        load_rectifier(self.checkpoint(spec))

    def fingerprint(self, spec: RelationSpec) -> str:
        return rectifier_digest(self.checkpoint(spec))

    @contextmanager
    def applied(self, pipe, spec: RelationSpec) -> Iterator[Conditioner]:
        rectifier = load_rectifier(self.checkpoint(spec), device=pipe.device)
        rectifier.check_backbone(pipe)
        triplet = (spec.object_a, spec.relation, spec.object_b)
        with torch.no_grad():
            yield lambda prompt, setting: prompt_embeddings(pipe, prompt, setting, rectifier, triplet)


class TransferMethod:
    """One rectifier applied to every relation (unseen objects, paper Sec. 4.4): the relation's
    own words fill the graph, so a rectifier trained on one object pair is tried on others."""

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
    """One generalist rectifier for every relation: it reads (A, R, B) from each prompt itself."""

    def __init__(self, rectifier: str | Path, alphas: tuple[float, ...], name: str = "rrnet_generalist") -> None:
        super().__init__(rectifier, alphas, name)

    def check(self, spec: RelationSpec) -> None:
        for prompt in (spec.prompt, spec.swapped_prompt):  # it would otherwise pass the prompt through unchanged
            if self.rectifier.find_triplet(prompt) is None:
                known = ", ".join(sorted(self.rectifier.relation_phrases())) or "none"
                raise CheckpointError(f"{self.path}: finds no relation it knows ({known}) in {spec.name}'s prompt {prompt!r}")

    @contextmanager
    def applied(self, pipe, spec: RelationSpec) -> Iterator[Conditioner]:
        self.rectifier.check_backbone(pipe)
        self.rectifier.to(pipe.device)
        with torch.no_grad():
            yield lambda prompt, setting: prompt_embeddings(pipe, prompt, setting, self.rectifier, None)
