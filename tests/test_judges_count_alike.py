"""Relation accuracy means the same under every judge: both objects present and the relation holds."""

from __future__ import annotations

import pytest

from rrnet.eval.geometry import Box, verdict_from_boxes
from rrnet.eval.judges.base import JudgeResult
from rrnet.eval.metrics import tally

from test_eval_vlm_judge import QUERY, RED, ScriptedJudge, image


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        (JudgeResult(True, True, True, "ARB"), "correct"),
        (JudgeResult(True, True, True, "BRA"), "swapped"),
        (JudgeResult(True, True, True, "neither"), "neither"),
        (JudgeResult(True, False, False, "ARB"), "neither"),  # an object is missing: never correct
        (JudgeResult(False, False, False, "BRA"), "neither"),
        (JudgeResult(True, True, True, None), "unreadable"),
        (JudgeResult(False, True, False, "ARB", unparseable=["q1"]), "unreadable"),
    ],
)
def test_each_image_has_one_outcome(result, outcome):
    assert result.outcome == outcome
    assert result.correct == (outcome == "correct")
    counts = tally([result])
    assert (counts.correct, counts.swapped, counts.neither, counts.unreadable) == tuple(
        int(outcome == o) for o in ("correct", "swapped", "neither", "unreadable"))


def test_vlm_question_5_alone_is_not_correct():
    """Question 5 says "A R B" but question 2 says B is absent: not correct, as for the other judges."""
    answers = ["Yes.", "No.", "No.", "Only a book.", "A book on a bowl."]
    [result] = ScriptedJudge({RED: answers}).judge([image(RED)], QUERY)
    assert result.verdict == "ARB" and not result.both
    assert not result.correct and result.outcome == "neither"
    assert tally([result]).correct == 0


def test_vlm_off_topic_yes_is_unreadable_and_listed():
    answers = ["There are two dogs in the picture.", "Yes.", "Yes.", "A dog.", "A book on a bowl."]
    [result] = ScriptedJudge({RED: answers}).judge([image(RED)], QUERY)
    assert not result.has_a and result.unparseable == ["q1"]
    assert result.outcome == "unreadable" and tally([result]).unreadable == 1


def test_detector_rules_require_both_objects():
    b = Box(50, 0, 60, 10)
    for rule in ("geneval", "visor"):
        has_a, has_b, verdict = verdict_from_boxes([], [b], "left of", rule)
        assert not JudgeResult(has_a, has_b, has_a and has_b, verdict).correct


# VISOR (Gokhale et al. 2022): any pair of boxes above the threshold; GenEval: each object's best box.
A_WEAK_LEFT = Box(0, 0, 10, 10, score=0.2)
A_STRONG_RIGHT = Box(200, 0, 210, 10, score=0.9)
B_MIDDLE = Box(100, 0, 110, 10, score=0.8)


def test_visor_counts_any_pair_of_boxes():
    # the best A box is right of B, a weaker A box is left of it: VISOR finds "A left of B"
    assert verdict_from_boxes([A_STRONG_RIGHT, A_WEAK_LEFT], [B_MIDDLE], "left of", "visor") == (True, True, "ARB")
    # GenEval reads only the best boxes: "B left of A"
    assert verdict_from_boxes([A_STRONG_RIGHT, A_WEAK_LEFT], [B_MIDDLE], "left of", "geneval") == (True, True, "BRA")


def test_visor_any_pair_over_b_boxes_too_and_reverse_when_no_pair_fits():
    b_left, b_right = Box(0, 0, 10, 10, 0.9), Box(300, 0, 310, 10, 0.1)
    assert verdict_from_boxes([B_MIDDLE], [b_left, b_right], "left of", "visor")[2] == "ARB"
    assert verdict_from_boxes([B_MIDDLE], [b_left], "left of", "visor")[2] == "BRA"
    same_column = Box(100, 50, 110, 60, 0.9)
    assert verdict_from_boxes([B_MIDDLE], [same_column], "left of", "visor")[2] == "neither"
