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
    caption_for,
    get_object,
    get_relation,
    inverse_relation,
    judge_relations,
    render_relations,
    swap_clause,
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
from rrnet.world.render import SCENE_RADIUS_RANGE, Placement, draw

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
    assert len(OBJECTS) >= 8 and len(RELATIONS) >= 4
    assert len({o.colour for o in OBJECTS}) == len(OBJECTS)
    assert len({o.shape for o in OBJECTS}) == len(OBJECTS)
    colours = [np.asarray(o.rgb, float) for o in OBJECTS]
    bg = np.asarray(BACKGROUND_RGB, float)
    assert min(np.linalg.norm(c - bg) for c in colours) > 150
    assert min(np.linalg.norm(p - q) for p, q in itertools.combinations(colours, 2)) > 140
    assert {"left of", "right of", "above", "below"} <= set(PHRASES)


def test_prompts_and_canonical_form() -> None:
    assert prompt_for("red circle", "above", "blue square") == "a red circle above a blue square"
    assert object_prompt("red circle") == "a photo of a red circle"
    assert canonical("red circle", "below", "blue square") == canonical("blue square", "above", "red circle")
    assert canonical("red circle", "left of", "blue square") != canonical("red circle", "right of", "blue square")
    assert same_fact(("red circle", "right of", "cyan column"), ("cyan column", "left of", "red circle"))
    assert not same_fact(("red circle", "above", "cyan column"), ("red circle", "left of", "cyan column"))
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
    o1, p1 = render_object("cyan column", np.random.default_rng(3))
    o2, p2 = render_object("cyan column", np.random.default_rng(3))
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
    # A blue region shaped like a column, bar, wedge or cross is not a "blue square".
    for other in ("cyan column", "white bar", "pink wedge", "purple cross"):
        image = draw((Placement(other, (16.0, 16.0), 7.0),))
        mask = np.all(image == get_object(other).rgb, axis=2)
        image[mask] = get_object("blue square").rgb
        assert "blue square" not in find_objects(image), other


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
    f1 = write_relation_folder(tmp_path / "x", "green triangle", "left of", "cyan column", n_images=2, seed=4)
    f2 = write_relation_folder(tmp_path / "y", "green triangle", "left of", "cyan column", n_images=2, seed=4)
    files1 = sorted(p.relative_to(f1) for p in f1.rglob("*") if p.is_file())
    files2 = sorted(p.relative_to(f2) for p in f2.rglob("*") if p.is_file())
    assert files1 == files2
    assert all((f1 / p).read_bytes() == (f2 / p).read_bytes() for p in files1)


# --- two relations, three objects --------------------------------------------------------------

VERTICAL, HORIZONTAL = ("above", "below"), ("left of", "right of")


def _two_relation_captions(n: int, seed: int):
    """n random two-relation captions in every grammatical form (shared object first or second)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        s, p, q = (NAMES[i] for i in rng.choice(len(NAMES), 3, replace=False))
        rv, rh = VERTICAL[rng.integers(2)], HORIZONTAL[rng.integers(2)]
        v = (p, rv, s) if rng.random() < 0.5 else (s, rv, p)
        h = (q, rh, s) if rng.random() < 0.5 else (s, rh, q)
        yield ((v, h) if rng.random() < 0.5 else (h, v)), rng


def test_caption_grammar() -> None:
    triplets = (("red circle", "above", "blue square"), ("green triangle", "left of", "blue square"))
    assert caption_for(triplets) == "a red circle above a blue square and a green triangle left of the blue square"
    assert caption_for(swap_clause(triplets, 1)) == "a red circle above a blue square and the blue square left of a green triangle"
    assert caption_for(triplets[:1]) == prompt_for(*triplets[0])
    with pytest.raises(DataError, match="share exactly one object"):
        caption_for((("red circle", "above", "blue square"), ("green triangle", "left of", "yellow diamond")))
    with pytest.raises(DataError, match="different axes"):
        caption_for((("red circle", "above", "blue square"), ("green triangle", "below", "blue square")))
    with pytest.raises(DataError):
        caption_for((("red circle", "above", "red circle"),))


def test_three_object_scenes_hold_both_relations() -> None:
    for triplets, rng in _two_relation_captions(300, seed=3):
        image, truth = render_relations(triplets, rng)
        assert truth.prompt == caption_for(triplets) and len(truth.placements) == 3
        for p in truth.placements:
            assert SCENE_RADIUS_RANGE[0] <= p.radius <= SCENE_RADIUS_RANGE[1]
            assert all(p.radius + 1.0 - 1e-9 <= c <= 32 - p.radius - 1.0 + 1e-9 for c in p.centre)
        for p, q in itertools.combinations(truth.placements, 2):  # circumscribed circles apart
            assert np.hypot(p.centre[0] - q.centre[0], p.centre[1] - q.centre[1]) >= p.radius + q.radius + 2.0 - 1e-9
        for a, relation, b in triplets:
            rel = get_relation(relation)
            along = 0 if rel.axis == "x" else 1
            d = truth.placement(b).centre[along] - truth.placement(a).centre[along]
            assert (d > 0) == rel.a_first


def test_judge_agrees_with_renderer_on_three_object_scenes() -> None:
    n = correct = swapped = 0
    for triplets, rng in _two_relation_captions(1000, seed=0):
        image, _ = render_relations(triplets, rng)
        judged = judge_relations(image, triplets)
        correct += judged.all_correct and judged.objects_found
        k = int(rng.integers(2))  # the caption with one relation's objects swapped
        other = judge_relations(image, swap_clause(triplets, k))
        swapped += other.outcomes[k] == "swapped" and other.outcomes[1 - k] == "correct" and not other.all_correct
        n += 1
    assert correct / n >= 0.99
    assert swapped / n >= 0.99


def test_relation_outcomes_missing_and_neither() -> None:
    triplets = (("red circle", "above", "blue square"), ("green triangle", "left of", "blue square"))
    image, truth = render_relations(triplets, np.random.default_rng(1))
    without_triangle = draw(tuple(p for p in truth.placements if p.name != "green triangle"))
    judged = judge_relations(without_triangle, triplets)
    assert judged.outcomes == ("correct", "missing") and not judged.objects_found and not judged.all_correct
    diagonal = draw((Placement("red circle", (8.0, 8.0), 5.0), Placement("blue square", (23.0, 23.0), 5.0),
                     Placement("green triangle", (8.0, 23.0), 5.0)))
    assert judge_relations(diagonal, triplets).outcomes == ("neither", "correct")
