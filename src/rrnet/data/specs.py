"""Relation specs: what one relation to rectify is, and how it is read from disk.

Two on-disk formats describe a relation:

* the official RRNet layout: a folder with ``index.json`` holding ``A, R, B, ARB, BRA,
  ARB_dir, BRA_dir`` and image sub-folders named ``{A}``, ``{B}``, ``{ARB_dir}``, ``{BRA_dir}``;
* our manifest (``*.toml`` or ``*.json``, ``relation.toml`` inside a folder) with plainly
  named keys and image folders or file lists relative to the manifest::

      object_a = "book"
      relation = "on"
      object_b = "bowl"
      prompt = "a book on a bowl"
      swapped_prompt = "a bowl on a book"
      category = "position"            # optional

      [images]
      prompt = "book_on_bowl"          # a folder ...
      swapped_prompt = ["x/1.png"]     # ... or a list of files
      object_a = "book"
      object_b = "bowl"

Every problem becomes one DataError line naming the file and the key at fault.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rrnet.data.images import check_image, find_images, natural_key
from rrnet.errors import DataError

INDEX_FILE = "index.json"
MANIFEST_FILES = ("relation.toml", "relation.json")

_OFFICIAL_WORD_KEYS = ("A", "R", "B", "ARB", "BRA", "ARB_dir", "BRA_dir")
_MANIFEST_KEYS = ("object_a", "relation", "object_b", "prompt", "swapped_prompt", "images")
_MANIFEST_IMAGE_KEYS = ("prompt", "swapped_prompt", "object_a", "object_b")


@dataclass(frozen=True)
class RelationSpec:
    """One directional relation "A R B" with the exemplar images that train its rectifier.

    The swapped prompt and its images are the negatives (the picture we must not draw);
    the single-object images anchor what A and B look like on their own.
    """

    object_a: str
    relation: str
    object_b: str
    prompt: str
    """The prompt whose meaning must be drawn: A R B."""
    swapped_prompt: str
    """The same words with the objects swapped: B R A."""
    images_prompt: tuple[Path, ...]
    images_swapped: tuple[Path, ...]
    images_a: tuple[Path, ...]
    images_b: tuple[Path, ...]
    name: str
    """Folder or manifest name: a stable label for checkpoints and reports."""
    source: Path
    """The index.json or manifest file this spec was read from, for error messages."""
    category: str | None = None
    """Kind of relation (e.g. "position", "action") to group benchmark results."""

    def swapped(self) -> RelationSpec:
        """The same relation read the other way round: B R A, with images swapped to match."""
        return dataclasses.replace(
            self,
            object_a=self.object_b,
            object_b=self.object_a,
            prompt=self.swapped_prompt,
            swapped_prompt=self.prompt,
            images_prompt=self.images_swapped,
            images_swapped=self.images_prompt,
            images_a=self.images_b,
            images_b=self.images_a,
        )


# ---------------------------------------------------------------- reading files


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _read_mapping(path: Path) -> dict[str, Any]:
    """Parse a JSON or TOML file into a dict, turning every failure into one DataError line."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from err
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise DataError(f"{path}: invalid {kind}: {_one_line(str(err))}") from err
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object at the top level, got {type(data).__name__}")
    return data


def _require_keys(
    data: dict[str, Any], keys: tuple[str, ...], source: Path, where: str = ""
) -> None:
    missing = [key for key in keys if key not in data]
    if missing:
        listed = ", ".join(f"'{where}{key}'" for key in missing)
        raise DataError(f"{source}: missing key{'s' if len(missing) > 1 else ''} {listed}")


_OPTIONAL_KEYS = ("category",)


def _refuse_unknown_keys(data: dict[str, Any], known: tuple[str, ...], source: Path, where: str = "") -> None:
    """A misspelt key ("catgory") would be silently ignored: name it instead."""
    unknown = sorted(set(data) - set(known) - set(_OPTIONAL_KEYS if not where else ()))
    if unknown:
        listed = ", ".join(f"'{where}{key}'" for key in unknown)
        raise DataError(f"{source}: unknown key{'s' if len(unknown) > 1 else ''} {listed}; "
                        f"expected {', '.join(known)}")


def _text(data: dict[str, Any], key: str, source: Path, where: str = "") -> str:
    """A required non-empty string value, stripped of surrounding spaces."""
    value = data[key]
    if not isinstance(value, str):
        raise DataError(
            f"{source}: key '{where}{key}' must be a string, got {type(value).__name__}"
        )
    if not value.strip():
        raise DataError(f"{source}: key '{where}{key}' is an empty string")
    return value.strip()


def _category(data: dict[str, Any], source: Path) -> str | None:
    if data.get("category") is None:
        return None
    return _text(data, "category", source)


def _check_objects_differ(
    object_a: str, object_b: str, key_a: str, key_b: str, source: Path
) -> None:
    if object_a.casefold() == object_b.casefold():
        raise DataError(
            f"{source}: '{key_a}' and '{key_b}' are the same object ('{object_a}'); "
            "a relation needs two different objects"
        )


MAX_PROMPT_CHARS = 1000  # far beyond the text encoder's 77 tokens; anything longer is a mistake


def _phrase_starts(text: str, phrase: str) -> list[int]:
    """Where `phrase` occurs in `text` as whole words (any case, any spacing between its words)."""
    words = phrase.split()
    pattern = r"(?<!\w)" + r"\s+".join(map(re.escape, words)) + r"(?!\w)"
    return [m.start() for m in re.finditer(pattern, text, re.IGNORECASE)]


def _check_text(value: str, key: str, source: Path) -> None:
    if any(not ch.isprintable() for ch in value):
        raise DataError(f"{source}: key '{key}' holds a control character (a newline, tab or invisible mark)")
    if len(value) > MAX_PROMPT_CHARS:
        raise DataError(f"{source}: key '{key}' is {len(value)} characters long; prompts hold at most "
                        f"{MAX_PROMPT_CHARS}")


def _check_relation_text(words: dict[str, str], prompts: dict[str, str], source: Path) -> None:
    """The three words and two prompts describe one directional relation, unambiguously:
    three different words, each with a letter or digit, each exactly once in both prompts, the
    objects in opposite orders, the two prompts different."""
    (key_a, a), (key_r, r), (key_b, b) = words.items()
    for key, value in (*words.items(), *prompts.items()):
        _check_text(value, key, source)
    for key, word in words.items():
        if not any(ch.isalnum() for ch in word):
            raise DataError(f"{source}: key '{key}' ({word!r}) has no letter or digit; it cannot name an object or relation")
    for key, word in ((key_a, a), (key_b, b)):
        if " ".join(word.split()).casefold() == " ".join(r.split()).casefold():
            raise DataError(f"{source}: the relation '{key_r}' ({r!r}) is the same word as the object '{key}'")
    (key_p, prompt), (key_s, swapped) = prompts.items()
    if " ".join(prompt.split()).casefold() == " ".join(swapped.split()).casefold():
        raise DataError(f"{source}: '{key_p}' and '{key_s}' are the same prompt; the swapped prompt must exchange the objects")
    for key, text in prompts.items():
        starts = {}
        for word_key, word in words.items():
            found = _phrase_starts(text, word)
            if not found:
                raise DataError(f"{source}: {word!r} is not in the prompt {text!r} (key '{word_key}', prompt '{key}')")
            if len(found) > 1:
                raise DataError(f"{source}: {word!r} occurs {len(found)} times in the prompt {text!r}; "
                                "each word of the relation must occur once")
            starts[word_key] = found[0]
        a_first = starts[key_a] < starts[key_b]
        if a_first != (key == key_p):
            expected = f"{a!r} before {b!r}" if key == key_p else f"{b!r} before {a!r}"
            raise DataError(f"{source}: the prompt '{key}' ({text!r}) must name {expected}")


# ---------------------------------------------------------------- image sources


def _images_in_folder(folder: Path, key: str, source: Path) -> tuple[Path, ...]:
    if not folder.is_dir():
        raise DataError(f"{source}: image folder '{folder}' not found (named by key '{key}')")
    images = find_images(folder)
    if not images:
        raise DataError(f"{folder}: no images in folder (named by key '{key}' in {source})")
    return images


def _images_from_entry(value: Any, base: Path, key: str, source: Path) -> tuple[Path, ...]:
    """A manifest image entry: a folder path, or a list of image file paths."""
    if isinstance(value, str) and value.strip():
        return _images_in_folder(base / Path(value).expanduser(), key, source)
    if isinstance(value, list):
        if not value:
            raise DataError(f"{source}: key '{key}' is an empty list of images")
        paths = []
        for item in value:
            if not isinstance(item, str) or not item.strip():
                raise DataError(f"{source}: key '{key}' must list image paths as non-empty strings")
            path = base / Path(item).expanduser()
            if not path.is_file():
                raise DataError(f"{source}: image file '{path}' not found (listed in key '{key}')")
            paths.append(check_image(path))
        return tuple(paths)
    raise DataError(
        f"{source}: key '{key}' must be a folder path or a list of image paths, "
        f"got {type(value).__name__ if not isinstance(value, str) else 'an empty string'}"
    )


# ---------------------------------------------------------------- the two formats


def _load_official(index: Path) -> RelationSpec:
    """The official RRNet layout: index.json next to the four image folders."""
    data = _read_mapping(index)
    _require_keys(data, _OFFICIAL_WORD_KEYS, index)
    _refuse_unknown_keys(data, _OFFICIAL_WORD_KEYS, index)
    words = {key: _text(data, key, index) for key in _OFFICIAL_WORD_KEYS}
    _check_objects_differ(words["A"], words["B"], "A", "B", index)
    _check_relation_text({k: words[k] for k in ("A", "R", "B")}, {k: words[k] for k in ("ARB", "BRA")}, index)
    folder = index.parent

    def images(key: str) -> tuple[Path, ...]:
        # Folder names are used exactly as written: they are file names, not words.
        return _images_in_folder(folder / data[key], key, index)

    return RelationSpec(
        object_a=words["A"],
        relation=words["R"],
        object_b=words["B"],
        prompt=words["ARB"],
        swapped_prompt=words["BRA"],
        images_prompt=images("ARB_dir"),
        images_swapped=images("BRA_dir"),
        images_a=images("A"),
        images_b=images("B"),
        name=folder.name,
        source=index,
        category=_category(data, index),
    )


def _load_manifest(manifest: Path, data: dict[str, Any]) -> RelationSpec:
    """Our manifest: plain key names, image folders or file lists relative to the manifest."""
    _require_keys(data, _MANIFEST_KEYS, manifest)
    _refuse_unknown_keys(data, _MANIFEST_KEYS, manifest)
    words = {key: _text(data, key, manifest) for key in _MANIFEST_KEYS if key != "images"}
    _check_objects_differ(words["object_a"], words["object_b"], "object_a", "object_b", manifest)
    _check_relation_text({k: words[k] for k in ("object_a", "relation", "object_b")},
                         {k: words[k] for k in ("prompt", "swapped_prompt")}, manifest)
    table = data["images"]
    if not isinstance(table, dict):
        raise DataError(f"{manifest}: key 'images' must be a table, got {type(table).__name__}")
    _require_keys(table, _MANIFEST_IMAGE_KEYS, manifest, where="images.")
    _refuse_unknown_keys(table, _MANIFEST_IMAGE_KEYS, manifest, where="images.")
    base = manifest.parent
    images = {
        key: _images_from_entry(table[key], base, f"images.{key}", manifest)
        for key in _MANIFEST_IMAGE_KEYS
    }
    is_folder_manifest = manifest.name.lower() in MANIFEST_FILES
    return RelationSpec(
        object_a=words["object_a"],
        relation=words["relation"],
        object_b=words["object_b"],
        prompt=words["prompt"],
        swapped_prompt=words["swapped_prompt"],
        images_prompt=images["prompt"],
        images_swapped=images["swapped_prompt"],
        images_a=images["object_a"],
        images_b=images["object_b"],
        name=base.name if is_folder_manifest else manifest.stem,
        source=manifest,
        category=_category(data, manifest),
    )


def _load_file(path: Path) -> RelationSpec:
    """A .json file is official when it has the official keys, else ours; .toml is ours."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise DataError(
            f"{path}: not a relation file; expected a folder, an index.json, "
            "or a .toml/.json manifest"
        )
    if suffix == ".json" and path.name.lower() == INDEX_FILE:
        return _load_official(path)
    data = _read_mapping(path)
    looks_official = suffix == ".json" and "object_a" not in data and "A" in data
    return _load_official(path) if looks_official else _load_manifest(path, data)


def _relation_file_in(folder: Path) -> Path | None:
    """The one relation file in a folder, None when there is none."""
    present = [folder / name for name in (INDEX_FILE, *MANIFEST_FILES) if (folder / name).is_file()]
    if len(present) > 1:
        names = " and ".join(p.name for p in present)
        raise DataError(f"{folder}: found both {names}; keep only one relation file")
    return present[0] if present else None


# ---------------------------------------------------------------- public API


def load_relation(path: str | Path) -> RelationSpec:
    """Read one relation from a folder, its index.json, or a .toml/.json manifest.

    Raises DataError with one line naming the file and the problem when anything is
    missing or malformed, so a bad dataset fails before any model is loaded.
    """
    item = load_item(path)
    if not isinstance(item, RelationSpec):
        raise DataError(f"{item.source}: states {len(item.relations)} relations in one prompt; give it to "
                        "`rrnet train` among its --data (this command takes one relation)")
    return item


def load_item(path: str | Path):
    """A relation (`RelationSpec`) or a prompt stating several relations (`rrnet.data.scenes.SceneSpec`)."""
    from rrnet.data.scenes import is_scene_index, load_scene

    path = Path(path).expanduser().absolute()
    if path.is_dir():
        relation_file = _relation_file_in(path)
        if relation_file is None:
            raise DataError(
                f"{path}: no {INDEX_FILE} (or {' / '.join(MANIFEST_FILES)}) in this folder"
            )
        path = relation_file
    elif not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.name.lower() == INDEX_FILE and is_scene_index(path):
        return load_scene(path)
    return _load_file(path)


def find_relations(root: str | Path, scenes: bool = False) -> list:
    """Every relation in a benchmark folder: each immediate sub-folder holding a relation file
    (with `scenes`, also folders of prompts stating several relations).

    Sorted by folder name (naturally), so runs and reports list relations in a stable order.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DataError(f"{root}: benchmark folder not found")
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: natural_key(p.name),
    )
    specs = [(load_item if scenes else load_relation)(folder) for folder in folders if _relation_file_in(folder)]
    if not specs:
        hint = "; this folder is itself one relation" if _relation_file_in(root) else ""
        raise DataError(
            f"{root}: no relation sub-folders (with {INDEX_FILE} or relation.toml){hint}"
        )
    return specs


def load_relations(paths: str | Path | list[str | Path]) -> list:
    """The training items of several `--data` paths, in the order given: each a relation (folder
    or manifest), a prompt stating several relations, or a benchmark folder of either."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    specs: list = []
    for path in paths:
        folder = Path(path).expanduser().absolute()
        if folder.is_dir() and _relation_file_in(folder) is None:
            specs.extend(find_relations(folder, scenes=True))
        else:
            specs.append(load_item(folder))
    return specs
