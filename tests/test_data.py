"""Relation specs and exemplar images: the official examples, our manifests, messy files, errors."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from rrnet.data import (
    RelationSpec,
    find_images,
    find_relations,
    load_image,
    load_images,
    load_relation,
    save_image_atomic,
)
from rrnet.errors import DataError

torch.set_num_threads(1)

EXAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "rr-examples"

# name: (A, R, B, prompt, swapped prompt, image counts: prompt, swapped, A, B)
EXPECTED = {
    "below": ("panda", "below", "desk", "there is a panda below desk",
              "there is a desk below panda", (6, 5, 3, 3)),
    "beneath": ("car", "beneath", "bridge", "there is a car beneath bridge",
                "there is a bridge beneath car", (4, 5, 4, 3)),
    "contain": ("car", "contains", "bottle", "a car contains bottle",
                "a bottle contains car", (3, 5, 4, 3)),
    "place": ("book", "placed", "bowl", "a book is placed on a bowl",
              "a bowl is placed on the book", (4, 4, 2, 4)),
}


def needs_examples():
    if not EXAMPLES.is_dir():
        pytest.skip(f"{EXAMPLES} not present")


# ---------------------------------------------------------------- helpers


def write_image(path: Path, color=(200, 30, 30), size=(12, 12), fmt="PNG", mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format=fmt)
    return path


def fill_folder(folder: Path, count: int = 2) -> Path:
    for i in range(count):
        write_image(folder / f"{i + 1}.png", color=(40 * i, 100, 200))
    return folder


OFFICIAL = {
    "A": "book",
    "R": "on",
    "B": "bowl",
    "ARB": "a book on a bowl",
    "BRA": "a bowl on a book",
    "ARB_dir": "book on bowl",
    "BRA_dir": "bowl on book",
}


def make_official(root: Path, index=None, folders=True) -> Path:
    """An official-layout relation folder with tiny generated images."""
    index = dict(OFFICIAL) if index is None else index
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.json").write_text(json.dumps(index))
    if folders:
        for key in ("A", "B", "ARB_dir", "BRA_dir"):
            fill_folder(root / OFFICIAL[key])
    return root


MANIFEST_TOML = """
object_a = "cat"
relation = "chasing"
object_b = "dog"
prompt = "a cat chasing a dog"
swapped_prompt = "a dog chasing a cat"
category = "action"

[images]
prompt = "pos"
swapped_prompt = ["neg/b.png", "neg/a.png"]
object_a = "cat"
object_b = "dog"
"""


def make_manifest_images(root: Path) -> None:
    fill_folder(root / "pos", 3)
    write_image(root / "neg" / "a.png")
    write_image(root / "neg" / "b.png")
    fill_folder(root / "cat", 1)
    fill_folder(root / "dog", 2)


def raises_data_error(path, *fragments):
    with pytest.raises(DataError) as info:
        load_relation(path)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


# ---------------------------------------------------------------- the official examples


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_official_examples_load(name):
    needs_examples()
    spec = load_relation(EXAMPLES / name)
    a, r, b, prompt, swapped, counts = EXPECTED[name]
    assert (spec.object_a, spec.relation, spec.object_b) == (a, r, b)
    assert (spec.prompt, spec.swapped_prompt) == (prompt, swapped)
    assert spec.name == name and spec.category is None
    groups = (spec.images_prompt, spec.images_swapped, spec.images_a, spec.images_b)
    assert tuple(len(g) for g in groups) == counts
    assert spec.images_a[0].parent.name == a
    batch = load_images([p for g in groups for p in g], 64)
    assert batch.shape == (sum(counts), 3, 64, 64) and batch.dtype == torch.float32
    assert batch.min() >= -1.0 and batch.max() <= 1.0


def test_official_index_json_path_and_benchmark_folder():
    needs_examples()
    spec = load_relation(EXAMPLES / "below" / "index.json")
    assert spec.source.name == "index.json" and spec.name == "below"
    assert [s.name for s in find_relations(EXAMPLES)] == sorted(EXPECTED)


def test_official_jpeg_named_png_is_found_in_natural_order():
    needs_examples()
    spec = load_relation(EXAMPLES / "below")
    names = [p.name for p in spec.images_prompt]
    assert names == ["5.jpeg", "6.jpeg", "6.png", "7.jpeg", "7.png", "8.png"]


# ---------------------------------------------------------------- our manifests


def test_toml_manifest_loads(tmp_path):
    make_manifest_images(tmp_path)
    manifest = tmp_path / "cat_dog.toml"
    manifest.write_text(MANIFEST_TOML)
    spec = load_relation(manifest)
    assert (spec.object_a, spec.relation, spec.object_b) == ("cat", "chasing", "dog")
    assert spec.prompt == "a cat chasing a dog" and spec.category == "action"
    assert spec.name == "cat_dog" and spec.source == manifest
    assert [p.name for p in spec.images_prompt] == ["1.png", "2.png", "3.png"]
    assert [p.name for p in spec.images_swapped] == ["b.png", "a.png"]  # list order is kept
    assert len(spec.images_a) == 1 and len(spec.images_b) == 2


def test_json_manifest_and_folder_manifest_load(tmp_path):
    make_manifest_images(tmp_path)
    data = {
        "object_a": "cat", "relation": "chasing", "object_b": "dog",
        "prompt": "a cat chasing a dog", "swapped_prompt": "a dog chasing a cat",
        "images": {"prompt": "pos", "swapped_prompt": "neg", "object_a": "cat", "object_b": "dog"},
    }
    (tmp_path / "chase.json").write_text(json.dumps(data))
    spec = load_relation(tmp_path / "chase.json")
    assert spec.name == "chase" and spec.category is None and len(spec.images_swapped) == 2

    (tmp_path / "chase.json").rename(tmp_path / "relation.json")
    spec = load_relation(tmp_path)
    assert spec.name == tmp_path.name and spec.source.name == "relation.json"


def test_folder_with_relation_toml_and_find_relations_sorting(tmp_path):
    for name in ("rel10", "rel2"):
        make_manifest_images(tmp_path / name)
        (tmp_path / name / "relation.toml").write_text(MANIFEST_TOML)
    (tmp_path / "not-a-relation").mkdir()
    make_official(tmp_path / "rel3")
    assert [s.name for s in find_relations(tmp_path)] == ["rel2", "rel3", "rel10"]


def test_swapped_exchanges_objects_prompts_and_images(tmp_path):
    spec = load_relation(make_official(tmp_path / "rel"))
    flipped = spec.swapped()
    assert isinstance(flipped, RelationSpec)
    assert (flipped.object_a, flipped.object_b) == ("bowl", "book")
    assert (flipped.prompt, flipped.swapped_prompt) == (spec.swapped_prompt, spec.prompt)
    assert flipped.images_prompt == spec.images_swapped and flipped.images_a == spec.images_b
    assert flipped.swapped() == spec


# ---------------------------------------------------------------- image folders and files


def test_find_images_skips_notes_and_hidden_and_sorts_naturally(tmp_path):
    for name in ("10.png", "2.png", "image (3).jpg", "image (12).jpg"):
        write_image(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "meta.json").write_text("{}")
    (tmp_path / "._2.png").write_bytes(b"\x00\x05\x16\x07 apple double")
    (tmp_path / "sub").mkdir()
    names = [p.name for p in find_images(tmp_path)]
    assert names == ["2.png", "10.png", "image (3).jpg", "image (12).jpg"]


def test_jpeg_named_png_loads(tmp_path):
    path = write_image(tmp_path / "photo.png", color=(0, 0, 255), fmt="JPEG")
    assert find_images(tmp_path) == (path,)
    image = load_image(path, 8)
    assert image.shape == (3, 8, 8)
    assert image[2].mean() > 0.9 and image[0].mean() < -0.9


def test_exif_orientation_is_honoured(tmp_path):
    # 40x20, left half red, right half blue; orientation 6 means "rotate 90 degrees clockwise
    # to display", which puts the red half on top.
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    image.save(path, format="JPEG", quality=95, exif=exif.tobytes())
    loaded = load_image(path, 8)
    red = loaded[0]
    assert red[:3].mean() > 0.8, "top should be red"
    assert red[-3:].mean() < -0.8, "bottom should be blue"


def test_resize_short_side_then_centre_crop(tmp_path):
    # 30x10: green left third, white middle third, green right third; the centre crop
    # keeps only the white middle.
    image = Image.new("RGB", (30, 10), (0, 255, 0))
    image.paste((255, 255, 255), (10, 0, 20, 10))
    path = tmp_path / "wide.png"
    image.save(path)
    loaded = load_image(path, 5)
    assert loaded.shape == (3, 5, 5)
    assert loaded[:, :, 1:4].min() > 0.8


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_becomes_white(tmp_path, mode):
    path = tmp_path / f"clear_{mode}.png"
    if mode == "P":
        image = Image.new("P", (8, 8), 0)
        image.putpalette([0, 0, 0] * 256)
        image.save(path, transparency=0)
    else:
        Image.new(mode, (8, 8), (0, 0, 0, 0) if mode == "RGBA" else (0, 0)).save(path)
    loaded = load_image(path, 8)
    assert torch.allclose(loaded, torch.ones(3, 8, 8), atol=1e-3)


def test_opaque_rgba_keeps_its_colour(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 255)).save(path)
    loaded = load_image(path, 8)
    assert torch.allclose(loaded[0], torch.ones(8, 8), atol=1e-3)
    assert torch.allclose(loaded[1], -torch.ones(8, 8), atol=1e-3)


def test_save_image_atomic_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out" / "x.png"
    save_image_atomic(Image.new("RGB", (4, 4), (255, 0, 0)), target)
    save_image_atomic(Image.new("RGB", (4, 4), (0, 0, 255)), target)
    assert Image.open(target).getpixel((0, 0)) == (0, 0, 255)
    with pytest.raises(Exception):
        save_image_atomic(Image.new("RGB", (4, 4)), target, format="NOT-A-FORMAT")
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.png"]
    assert Image.open(target).getpixel((0, 0)) == (0, 0, 255)


# ---------------------------------------------------------------- validation errors


def test_missing_index_json(tmp_path):
    (tmp_path / "empty").mkdir()
    raises_data_error(tmp_path / "empty", tmp_path / "empty", "index.json")


def test_missing_path(tmp_path):
    raises_data_error(tmp_path / "nope", tmp_path / "nope", "no such")


def test_bad_json(tmp_path):
    root = make_official(tmp_path / "rel")
    (root / "index.json").write_text('{"A": "book",,}')
    raises_data_error(root, root / "index.json", "invalid JSON")


def test_bad_toml(tmp_path):
    (tmp_path / "rel.toml").write_text("object_a = = 'x'")
    raises_data_error(tmp_path / "rel.toml", tmp_path / "rel.toml", "invalid TOML")


def test_missing_keys_are_listed(tmp_path):
    index = {k: v for k, v in OFFICIAL.items() if k not in ("BRA", "BRA_dir")}
    root = make_official(tmp_path / "rel", index=index)
    raises_data_error(root, root / "index.json", "'BRA'", "'BRA_dir'")


def test_missing_manifest_image_key(tmp_path):
    make_manifest_images(tmp_path)
    without_b_images = MANIFEST_TOML.rsplit('object_b = "dog"', 1)[0]
    (tmp_path / "m.toml").write_text(without_b_images)
    raises_data_error(tmp_path / "m.toml", "'images.object_b'")


@pytest.mark.parametrize(
    "key, value, fragment",
    [("A", 3, "must be a string"), ("R", "  ", "empty string"), ("B", "Book", "same object")],
)
def test_bad_values(tmp_path, key, value, fragment):
    root = make_official(tmp_path / "rel", index={**OFFICIAL, key: value})
    message = raises_data_error(root, root / "index.json", fragment)
    assert f"'{key}'" in message


def test_missing_image_folder_names_folder_and_key(tmp_path):
    root = make_official(tmp_path / "rel")
    for file in (root / "bowl on book").iterdir():
        file.unlink()
    (root / "bowl on book").rmdir()
    raises_data_error(root, root / "bowl on book", "'BRA_dir'")


def test_empty_image_folder(tmp_path):
    root = make_official(tmp_path / "rel")
    for file in (root / "book").iterdir():
        file.unlink()
    (root / "book" / "notes.txt").write_text("no pictures here")
    raises_data_error(root, root / "book", "no images", "'A'")


def test_corrupt_image_is_named(tmp_path):
    root = make_official(tmp_path / "rel")
    (root / "bowl" / "broken.png").write_bytes(b"this is not a png")
    raises_data_error(root, root / "bowl" / "broken.png", "not a readable image")


def test_missing_listed_image_file(tmp_path):
    make_manifest_images(tmp_path)
    (tmp_path / "neg" / "a.png").unlink()
    (tmp_path / "m.toml").write_text(MANIFEST_TOML)
    raises_data_error(tmp_path / "m.toml", tmp_path / "neg" / "a.png", "'images.swapped_prompt'")


def test_truncated_image_fails_on_load(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(path, format="JPEG")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="cut.jpg"):
        load_image(path, 8)


def test_find_relations_without_relations(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="no relation sub-folders"):
        find_relations(tmp_path)
