"""Exemplars of a prompt that states several relations ("a red circle above a blue square and a
green triangle left of the blue square"), in the official layout's extension:

``index.json`` with ``relations`` ([[A, R, B], [C, R2, D]], in prompt order), ``prompt`` and
``prompt_dir`` (the prompt and its image folder), ``swapped`` and ``swapped_dirs`` (per relation:
the prompt with that relation's objects swapped, and its images, the negatives), ``objects``
(each object's single-object image folder) and an optional ``category``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rrnet.data.specs import (
    _check_objects_differ,
    _check_text,
    _images_in_folder,
    _phrase_starts,
    _read_mapping,
    _refuse_unknown_keys,
    _require_keys,
    _text,
    _category,
)
from rrnet.errors import DataError

SCENE_KEYS = ("relations", "prompt", "prompt_dir", "swapped", "swapped_dirs", "objects")


@dataclass(frozen=True)
class SceneSpec:
    """Several relations stated by one prompt, with the images that train one rectifier on it."""

    relations: tuple[tuple[str, str, str], ...]
    prompt: str
    swapped_prompts: tuple[str, ...]  # per relation: the prompt with that relation's objects swapped
    images_prompt: tuple[Path, ...]
    images_swapped: tuple[tuple[Path, ...], ...]
    images_objects: tuple[tuple[str, tuple[Path, ...]], ...]  # (object, its single-object images)
    name: str
    source: Path
    category: str | None = None

    def object_images(self, name: str) -> tuple[Path, ...]:
        return dict(self.images_objects)[name]

    def prompt_relations(self) -> tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...]:
        """Every prompt the folder records, with the relations it states: the prompt itself, then
        per relation k the prompt with relation k's objects swapped (B R A in place of A R B)."""
        out = [(self.prompt, self.relations)]
        for k, text in enumerate(self.swapped_prompts):
            a, relation, b = self.relations[k]
            out.append((text, (*self.relations[:k], (b, relation, a), *self.relations[k + 1:])))
        return tuple(out)


def is_scene_index(path: Path) -> bool:
    """Whether an index.json describes several relations (it names them under "relations")."""
    try:
        return "relations" in _read_mapping(path)
    except DataError:
        return False


def _relations(data: dict[str, Any], source: Path) -> tuple[tuple[str, str, str], ...]:
    value = data["relations"]
    if not isinstance(value, list) or len(value) < 2 or not all(
            isinstance(t, list) and len(t) == 3 and all(isinstance(w, str) and w.strip() for w in t) for t in value):
        raise DataError(f"{source}: key 'relations' must list two or more [A, R, B] word triples")
    out = tuple(tuple(w.strip() for w in t) for t in value)
    for a, _, b in out:
        _check_objects_differ(a, b, "relations A", "relations B", source)
    if len(set(out)) != len(out):
        raise DataError(f"{source}: a relation is listed twice in 'relations'")
    return out


def load_scene(index: Path) -> SceneSpec:
    """Read a several-relation exemplar folder; one DataError line for anything wrong."""
    data = _read_mapping(index)
    _require_keys(data, SCENE_KEYS, index)
    _refuse_unknown_keys(data, SCENE_KEYS, index)
    relations = _relations(data, index)
    prompt = _text(data, "prompt", index)
    swapped, swapped_dirs, objects = data["swapped"], data["swapped_dirs"], data["objects"]
    for key, value in (("swapped", swapped), ("swapped_dirs", swapped_dirs)):
        if not isinstance(value, list) or len(value) != len(relations) or not all(isinstance(v, str) and v.strip() for v in value):
            raise DataError(f"{index}: key '{key}' must list one text per relation ({len(relations)})")
    names = list(dict.fromkeys(x for a, _, b in relations for x in (a, b)))
    if not isinstance(objects, dict) or set(objects) != set(names) or not all(isinstance(v, str) for v in objects.values()):
        raise DataError(f"{index}: key 'objects' must map each object of the relations ({', '.join(names)}) to its "
                        "image folder")
    for k, text in enumerate([prompt, *swapped]):
        key = "prompt" if k == 0 else f"swapped[{k - 1}]"
        _check_text(text, key, index)
        for word in {w for t in relations for w in t}:
            if not _phrase_starts(text, word):
                raise DataError(f"{index}: {word!r} is not in the prompt {text!r} (key '{key}')")
    if len({" ".join(t.split()).casefold() for t in [prompt, *swapped]}) != len(relations) + 1:
        raise DataError(f"{index}: the prompt and its swapped prompts must all differ")
    folder = index.parent
    return SceneSpec(
        relations=relations, prompt=prompt, swapped_prompts=tuple(s.strip() for s in swapped),
        images_prompt=_images_in_folder(folder / data["prompt_dir"], "prompt_dir", index),
        images_swapped=tuple(_images_in_folder(folder / d, "swapped_dirs", index) for d in swapped_dirs),
        images_objects=tuple((n, _images_in_folder(folder / objects[n], "objects", index)) for n in names),
        name=folder.name, source=index, category=_category(data, index),
    )
