"""Mini world: renderer truth, exact judge agreement, noise rejection, exemplar layout."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from PIL import Image

from rrnet.errors import DataError
from rrnet.world import (
    BACKGROUND_RGB,
    OBJECTS,
    RELATIONS,
    canonical,
    find_objects,
    get_relation,
    inverse_relation,
    judge_image,
    object_names,
    object_prompt,
    prompt_for,
    relation_phrases,
    render_object,
    render_pil,
    render_scene,
    same_fact,
    write_relation_folder,
)
from rrnet.world.render import Placement, draw

NAMES = object_names()
PHRASES = relation_phrases()
TRIPLES = [(a, r, b) for a, b in itertools.permutations(NAMES, 2) for r in PHRASES]


def _scenes(n: int, seed: int, size: int = 32, noise: float = 0.0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        a, r, b = TRIPLES[i % len(TRIPLES)]
        image, truth = render_scene(a, r, b, rng, size=size, noise=noise)
        yield image, truth


# --- vocabulary -------------------------------------------------------------------------------


def test_vocab_objects_are_distinct_and_far_apart() -> None:
    assert len(OBJECTS) >= 6 and len(RELATIONS) >= 4
    assert len({o.colour for o in OBJECTS}) == len(OBJECTS)
    assert len({o.shape for o in OBJECTS}) == len(OBJECTS)
    colours = [np.asarray(o.rgb, float) for o in OBJECTS]
    bg = np.asarray(BACKGROUND_RGB, float)
    assert min(np.linalg.norm(c - bg) for c in colours) > 150
    assert min(np.linalg.norm(p - q) for p, q in itertools.combinations(colours, 2)) > 120
    assert {"left of", "right of", "above", "below"} <= set(PHRASES)


def test_prompts_and_canonical_form() -> None:
    assert prompt_for("red circle", "above", "blue square") == "a red circle above a blue square"
    assert object_prompt("red circle") == "a photo of a red circle"
    assert canonical("red circle", "below", "blue square") == canonical("blue square", "above", "red circle")
    assert canonical("red circle", "left of", "blue square") != canonical("red circle", "right of", "blue square")
    assert same_fact(("red circle", "right of", "cyan ring"), ("cyan ring", "left of", "red circle"))
    assert not same_fact(("red circle", "above", "cyan ring"), ("red circle", "left of", "cyan ring"))
    assert inverse_relation("above") == "below" and inverse_relation("left of") == "right of"
    with pytest.raises(DataError):
        prompt_for("pink elephant", "above", "red circle")
    with pytest.raises(DataError):
        get_relation("inside")


# --- renderer ---------------------------------------------------------------------------------


def test_render_truth_geometry() -> None:
    for image, truth in _scenes(600, seed=11):
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        rel = get_relation(truth.relation)
        pa, pb = truth.placement_a, truth.placement_b
        for p in (pa, pb):
            assert 4.0 <= p.radius <= 7.0
            for c in p.centre:
                assert p.radius <= c <= 32 - p.radius
        along, off = (0, 1) if rel.axis == "x" else (1, 0)
        d = pb.centre[along] - pa.centre[along]
        assert (d > 0) == rel.a_first
        assert abs(d) >= pa.radius + pb.radius + 2.0 - 1e-9
        assert abs(pb.centre[off] - pa.centre[off]) <= 0.25 * abs(d) + 1e-9


def test_render_is_deterministic() -> None:
    img1, t1 = render_scene("red circle", "above", "blue square", np.random.default_rng(7), noise=5.0)
    img2, t2 = render_scene("red circle", "above", "blue square", np.random.default_rng(7), noise=5.0)
    img3, _ = render_scene("red circle", "above", "blue square", np.random.default_rng(8), noise=5.0)
    assert np.array_equal(img1, img2) and t1 == t2
    assert not np.array_equal(img1, img3)
    o1, p1 = render_object("cyan ring", np.random.default_rng(3))
    o2, p2 = render_object("cyan ring", np.random.default_rng(3))
    assert np.array_equal(o1, o2) and p1 == p2


def test_render_pil_matches_array() -> None:
    pil, truth = render_pil("green triangle", "left of", "purple cross", np.random.default_rng(1))
    arr, truth2 = render_scene("green triangle", "left of", "purple cross", np.random.default_rng(1))
    assert isinstance(pil, Image.Image) and pil.mode == "RGB" and pil.size == (32, 32)
    assert np.array_equal(np.asarray(pil), arr) and truth == truth2
    assert judge_image(pil, "green triangle", "left of", "purple cross").verdict == "ARB"


# --- judge ------------------------------------------------------------------------------------


def test_judge_agrees_with_renderer() -> None:
    ok = swapped = inverted = 0
    n = 1000
    for i, (image, t) in enumerate(_scenes(n, seed=0)):
        j = judge_image(image, t.a, t.relation, t.b)
        ok += j.has_a and j.has_b and j.verdict == "ARB"
        # Swapped truth on half the scenes, the inverse phrase on the other half (keeps the test fast).
        if i % 2:
            swapped += judge_image(image, t.b, t.relation, t.a).verdict == "BRA"
        else:
            inverted += judge_image(image, t.a, inverse_relation(t.relation), t.b).verdict == "BRA"
    assert ok / n >= 0.99
    assert swapped / (n // 2) >= 0.99
    assert inverted / (n // 2) >= 0.99


def test_judge_agrees_on_noisy_and_larger_renders() -> None:
    noisy = [judge_image(img, t.a, t.relation, t.b).verdict for img, t in _scenes(200, seed=5, noise=12.0)]
    assert noisy.count("ARB") / len(noisy) >= 0.99
    large = [judge_image(img, t.a, t.relation, t.b).verdict for img, t in _scenes(120, seed=6, size=64)]
    assert large.count("ARB") / len(large) >= 0.99


def test_single_object_scenes_find_only_that_object() -> None:
    rng = np.random.default_rng(2)
    for obj in NAMES:
        for _ in range(30):
            image, placement = render_object(obj, rng)
            found = find_objects(image)
            assert set(found) == {obj}
            assert found[obj].shape == next(o.shape for o in OBJECTS if o.name == obj)
            cx, cy = found[obj].centroid
            assert abs(cx - placement.centre[0]) < 0.5 and abs(cy - placement.centre[1]) < 0.5


def test_missing_object_is_neither() -> None:
    image, _ = render_object("red circle", np.random.default_rng(4))
    j = judge_image(image, "red circle", "above", "blue square")
    assert (j.has_a, j.has_b, j.verdict) == (True, False, "neither")


def test_overlap_and_diagonal_are_neither() -> None:
    overlap = draw((Placement("red circle", (14.0, 14.0), 6.0), Placement("blue square", (16.0, 21.0), 6.0)))
    j = judge_image(overlap, "red circle", "above", "blue square")
    assert j.verdict == "neither"
    diagonal = draw((Placement("red circle", (8.0, 8.0), 5.0), Placement("blue square", (23.0, 23.0), 5.0)))
    for rel in PHRASES:
        assert judge_image(diagonal, "red circle", rel, "blue square").verdict == "neither"


def test_wrong_shape_is_not_the_object() -> None:
    # A blue region shaped like a ring is not a "blue square".
    image = draw((Placement("cyan ring", (16.0, 16.0), 7.0),))
    ring_mask = np.all(image == OBJECTS[5].rgb, axis=2)
    image[ring_mask] = OBJECTS[1].rgb
    assert "blue square" not in find_objects(image)


def test_pure_noise_is_not_a_valid_scene() -> None:
    rng = np.random.default_rng(9)
    neither = 0
    for i in range(200):
        if i % 2:
            noise = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        else:
            noise = np.clip(rng.normal(128, 64, size=(32, 32, 3)), 0, 255).astype(np.uint8)
        a, r, b = TRIPLES[int(rng.integers(len(TRIPLES)))]
        neither += judge_image(noise, a, r, b).verdict == "neither"
    assert neither / 200 >= 0.99


# --- exemplar folders -------------------------------------------------------------------------


def test_exemplar_folder_layout(tmp_path) -> None:
    folder = write_relation_folder(tmp_path, "red circle", "above", "blue square", n_images=3, seed=1)
    index = json.loads((folder / "index.json").read_text())
    assert {"A", "R", "B", "ARB", "BRA", "ARB_dir", "BRA_dir"} <= set(index)
    assert all(isinstance(v, str) for v in index.values())
    assert index["category"] == "position"
    assert (index["A"], index["R"], index["B"]) == ("red circle", "above", "blue square")
    assert index["ARB"] == "a red circle above a blue square"
    assert index["BRA"] == "a blue square above a red circle"
    subdirs = {p.name for p in folder.iterdir() if p.is_dir()}
    assert subdirs == {index["A"], index["B"], index["ARB_dir"], index["BRA_dir"]}
    for sub in subdirs:
        assert sorted(p.name for p in (folder / sub).iterdir()) == ["1.png", "2.png", "3.png"]
    assert not list(folder.rglob("*.tmp"))
    for png in (folder / index["ARB_dir"]).iterdir():
        assert judge_image(Image.open(png), "red circle", "above", "blue square").verdict == "ARB"
    for png in (folder / index["BRA_dir"]).iterdir():
        assert judge_image(Image.open(png), "red circle", "above", "blue square").verdict == "BRA"
    for png in (folder / index["A"]).iterdir():
        assert set(find_objects(Image.open(png))) == {"red circle"}


def test_exemplar_folder_is_deterministic(tmp_path) -> None:
    f1 = write_relation_folder(tmp_path / "x", "green triangle", "left of", "cyan ring", n_images=2, seed=4)
    f2 = write_relation_folder(tmp_path / "y", "green triangle", "left of", "cyan ring", n_images=2, seed=4)
    files1 = sorted(p.relative_to(f1) for p in f1.rglob("*") if p.is_file())
    files2 = sorted(p.relative_to(f2) for p in f2.rglob("*") if p.is_file())
    assert files1 == files2
    assert all((f1 / p).read_bytes() == (f2 / p).read_bytes() for p in files1)
