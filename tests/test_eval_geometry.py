"""Positional rules on hand-made boxes; every expectation is worked out by hand from the rules."""

from __future__ import annotations

import pytest

from rrnet.errors import RRNetError
from rrnet.eval.geometry import (
    Box,
    canonical_relation,
    geneval_relations,
    relation_holds,
    verdict_from_boxes,
    visor_relations,
)

ORIGIN = Box(0, 0, 10, 10)  # centre (5, 5), size (10, 10)


def test_box_center_and_size():
    box = Box(10, 20, 30, 60, score=0.4)
    assert box.center == (20.0, 40.0)
    assert box.size == (20.0, 40.0)
    assert Box(30, 60, 10, 20).size == (20.0, 40.0)


def test_clear_left_right():
    # offset (-50, 0); shrink 0.1*(10+10)=2 -> (-48, 0); / 50 -> dx = -0.96
    b = Box(50, 0, 60, 10)
    assert geneval_relations(ORIGIN, b) == {"left of"}
    assert geneval_relations(b, ORIGIN) == {"right of"}
    assert visor_relations(ORIGIN, b) == {"left of"}
    for rule in ("geneval", "visor"):
        assert relation_holds(ORIGIN, b, "left of", rule)
        assert not relation_holds(ORIGIN, b, "right of", rule)
        assert relation_holds(b, ORIGIN, "right of", rule)


def test_clear_above_below_uses_image_coordinates():
    # y grows downwards: the box with the smaller y is above
    b = Box(0, 50, 10, 60)
    assert geneval_relations(ORIGIN, b) == {"above"}
    assert geneval_relations(b, ORIGIN) == {"below"}
    for rule in ("geneval", "visor"):
        assert relation_holds(ORIGIN, b, "above", rule)
        assert relation_holds(b, ORIGIN, "below", rule)
        assert not relation_holds(ORIGIN, b, "below", rule)


def test_overlapping_boxes_small_offset_geneval_none_visor_relation():
    # centres (50, 50) vs (55, 53): offset (-5, -3), shrink 0.1*200 = 20 on both axes -> (0, 0)
    a, b = Box(0, 0, 100, 100), Box(5, 3, 105, 103)
    assert geneval_relations(a, b) == frozenset()
    assert geneval_relations(b, a) == frozenset()
    assert visor_relations(a, b) == {"left of", "above"}
    assert visor_relations(b, a) == {"right of", "below"}


def test_small_revised_offset_is_not_a_direction():
    # offset (-3.5, 0), shrink 2 -> revised -1.5 (not ~0), but dx = -1.5/3.5 = -0.43 > -0.5
    b = Box(3.5, 0, 13.5, 10)
    assert geneval_relations(ORIGIN, b) == frozenset()
    assert visor_relations(ORIGIN, b) == {"left of"}


def test_just_past_threshold_is_a_direction():
    # offset (-14, 0), shrink 2 -> -12; dx = -12/14 = -0.857
    assert geneval_relations(ORIGIN, Box(14, 0, 24, 10)) == {"left of"}


def test_diagonal_holds_both_directions():
    # offset (-100, -100) -> revised (-98, -98); norm 141.4 -> dx = dy = -0.693
    b = Box(100, 100, 110, 110)
    assert geneval_relations(ORIGIN, b) == {"left of", "above"}
    assert visor_relations(ORIGIN, b) == {"left of", "above"}
    assert relation_holds(ORIGIN, b, "above") and relation_holds(ORIGIN, b, "left of")


def test_mostly_horizontal_only_left_under_geneval():
    # offset (-100, -30) -> revised (-98, -28); norm 104.4 -> dx = -0.94, dy = -0.27
    b = Box(100, 30, 110, 40)
    assert geneval_relations(ORIGIN, b) == {"left of"}
    assert not relation_holds(ORIGIN, b, "above", "geneval")
    # VISOR compares each axis on its own: centre y 5 < 35, so A is above B too
    assert relation_holds(ORIGIN, b, "above", "visor")


def test_identical_boxes_have_no_relation():
    assert geneval_relations(ORIGIN, ORIGIN) == frozenset()
    assert visor_relations(ORIGIN, ORIGIN) == frozenset()


@pytest.mark.parametrize(
    ("phrase", "canonical"),
    [
        ("left of", "left of"),
        ("on the left of", "left of"),
        ("to the left of", "left of"),
        ("right of", "right of"),
        ("on the right of", "right of"),
        ("To The Right Of", "right of"),
        ("above", "above"),
        ("on top of", "above"),
        ("over", "above"),
        ("below", "below"),
        ("under", "below"),
        ("beneath", "below"),
        ("  underneath ", "below"),
    ],
)
def test_synonyms(phrase, canonical):
    assert canonical_relation(phrase) == canonical
    below_origin = Box(0, 50, 10, 60)
    right_of_origin = Box(50, 0, 60, 10)
    expected = {
        "left of": (ORIGIN, right_of_origin),
        "right of": (right_of_origin, ORIGIN),
        "above": (ORIGIN, below_origin),
        "below": (below_origin, ORIGIN),
    }[canonical]
    assert relation_holds(*expected, phrase)
    assert not relation_holds(expected[1], expected[0], phrase)


@pytest.mark.parametrize("phrase", ["next to", "behind", "in front of", "inside", ""])
def test_unsupported_relation_raises(phrase):
    with pytest.raises(RRNetError) as err:
        relation_holds(ORIGIN, Box(50, 0, 60, 10), phrase)
    message = str(err.value)
    assert "\n" not in message and repr(phrase) in message and "left of" in message


def test_unknown_rule_raises():
    with pytest.raises(RRNetError, match="rule"):
        relation_holds(ORIGIN, Box(50, 0, 60, 10), "left of", rule="t2i-compbench")
    with pytest.raises(RRNetError, match="rule"):
        verdict_from_boxes([], [], "left of", rule="nope")


def test_verdict_uses_highest_score_box():
    left_weak = Box(0, 0, 10, 10, score=0.3)
    right_strong = Box(200, 0, 210, 10, score=0.9)
    middle = Box(100, 0, 110, 10, score=0.8)
    # the strong A box is right of B: "A left of B" is false, "B left of A" is true
    assert verdict_from_boxes([left_weak, right_strong], [middle], "left of") == (True, True, "BRA")
    assert verdict_from_boxes([left_weak], [middle], "left of") == (True, True, "ARB")
    assert verdict_from_boxes([right_strong, left_weak], [middle], "to the right of") == (
        True,
        True,
        "ARB",
    )


def test_verdict_missing_objects():
    b = Box(50, 0, 60, 10)
    assert verdict_from_boxes([], [b], "left of") == (False, True, "neither")
    assert verdict_from_boxes([ORIGIN], [], "left of") == (True, False, "neither")
    assert verdict_from_boxes([], [], "above", "visor") == (False, False, "neither")


def test_verdict_overlap_depends_on_rule():
    a, b = Box(0, 0, 100, 100), Box(5, 3, 105, 103)
    assert verdict_from_boxes([a], [b], "left of", "geneval") == (True, True, "neither")
    assert verdict_from_boxes([a], [b], "left of", "visor") == (True, True, "ARB")
    assert verdict_from_boxes([b], [a], "above", "visor") == (True, True, "BRA")


def test_verdict_unsupported_relation_raises_even_without_boxes():
    with pytest.raises(RRNetError):
        verdict_from_boxes([], [], "next to")
