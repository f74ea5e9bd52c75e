"""The five-question VLM protocol: question text and robust, never-guessing answer parsing."""

from __future__ import annotations

import pytest

from rrnet.errors import RRNetError
from rrnet.eval.vlm_protocol import (
    ProtocolAnswers,
    judge_from_answers,
    parse_choice,
    parse_yes_no,
    questions,
)

ARB = "a book on a bowl"
BRA = "a bowl on a book"


def test_questions_follow_the_protocol():
    qs = questions("book", "bowl", ARB + ".", BRA)
    assert len(qs) == 5
    assert qs[0].startswith("Is there any book in the image?")
    assert qs[1].startswith("Is there any bowl in the image?")
    assert qs[2].startswith("Are both book and bowl present in the image?")
    assert qs[3] == "Can you infer the relationship that exists between book and bowl in the image?"
    assert qs[4].startswith(f"Is there {ARB} or {BRA} or neither?")
    assert "yes or no" in qs[0].lower() and "neither" in qs[4]
    assert f"'{ARB}'" in qs[4] and f"'{BRA}'" in qs[4]


YES_NO_TABLE = [  # (answer, the object(s) asked about, parsed)
    ("Yes.", "cat", True),
    ("yes", "cat", True),
    ("Yes, there is a dog in the image.", "dog", True),
    ("**Yes**", "cat", True),
    ("Answer: Yes", "cat", True),
    ("Absolutely.", "cat", True),
    ("Yep, both are there.", "book|bowl", True),
    ("Correct.", "cat", True),
    ("I can see a cat sitting on the sofa.", "cat", True),
    ("There are two dogs in the picture.", "dog", True),
    ("Both the book and the bowl are present.", "book|bowl", True),
    ("Both are present.", "book|bowl", True),
    ("The image shows a cat.", "cat", True),
    ("There is a red block at the top.", "red block", True),
    ("There are two red blocks.", "red block", True),
    # a sentence-style answer that never names the asked object is not a yes
    ("There are two dogs in the picture.", "book", None),
    ("I can see a cat sitting on the sofa.", "dog", None),
    ("The image shows a cat.", "book|cat", None),
    ("There is a red circle.", "red block", None),
    ("No.", "cat", False),
    ("no", "cat", False),
    ("Nope", "cat", False),
    ("No, I don't see any cat.", "cat", False),
    ("No, but I can see a dog.", "cat", False),
    ("There is no cat in the image.", "cat", False),
    ("I don't see a cat here.", "cat", False),
    ("The cat is not visible in the image.", "cat", False),
    ("The image doesn't contain a cat.", "cat", False),
    ("Not really.", "cat", False),
    ("Absolutely not.", "cat", False),
    ("Neither of them is present.", "book|bowl", False),
    ("Yes and no.", "cat", None),
    ("I'm not sure.", "cat", None),
    ("It is hard to say.", "cat", None),
    ("Possibly, there might be a cat.", "cat", None),
    ("The image is too blurry to tell.", "cat", None),
    ("There is a dog but no cat.", "cat", None),
    ("", "cat", None),
    ("   ", "cat", None),
    ("A cat.", "cat", None),
]


@pytest.mark.parametrize(("answer", "about", "expected"), YES_NO_TABLE)
def test_parse_yes_no(answer, about, expected):
    assert parse_yes_no(answer, tuple(about.split("|"))) is expected


def test_sentence_yes_without_the_asked_object_is_not_a_yes():
    assert parse_yes_no("There are two dogs in the picture.") is None  # nothing asked: no sentence-style yes
    assert parse_yes_no("Yes.") is True


CHOICE_TABLE = [
    ("A book on a bowl.", "ARB"),
    ("a bowl on a book", "BRA"),
    ("'A book on a bowl'", "ARB"),
    ("\u201cA bowl on a book\u201d", "BRA"),
    ("A BOOK ON A BOWL!", "ARB"),
    ("The book on the bowl", "ARB"),
    ("The image shows: a book is placed on a bowl", "ARB"),
    ("The image shows a bowl on a book.", "BRA"),
    ("Answer: 'a book on a bowl'", "ARB"),
    ("It is not a book on a bowl, it is a bowl on a book.", "BRA"),
    ("A bowl on a book, not a book on a bowl.", "BRA"),
    ("Neither.", "neither"),
    ("neither", "neither"),
    ("None of them.", "neither"),
    ("Neither a book on a bowl nor a bowl on a book.", "neither"),
    ("A book on a bowl or a bowl on a book.", None),
    ("Both a book on a bowl and a bowl on a book.", None),
    ("A book on a bowl. Neither.", None),
    ("It is not a book on a bowl.", None),
    ("I can't tell.", None),
    ("The book is next to the bowl.", None),
    ("Book, bowl", None),
    ("", None),
]


@pytest.mark.parametrize(("answer", "expected"), CHOICE_TABLE)
def test_parse_choice(answer, expected):
    assert parse_choice(answer, ARB, BRA) == expected


def test_parse_choice_uses_word_order_not_bag_of_words():
    arb, bra = "a cat chasing a dog", "a dog chasing a cat"
    assert parse_choice("The cat is chasing the dog.", arb, bra) == "ARB"
    assert parse_choice("The dog is chasing the cat.", arb, bra) == "BRA"
    # passive voice restates neither sentence's word order: unparseable, not a guess
    assert parse_choice("The dog is being chased by the cat.", arb, bra) is None


def test_parse_choice_does_not_match_across_clauses():
    assert parse_choice("I see a book. On the left, a bowl.", ARB, BRA) is None


def test_judge_from_answers_all_parsed():
    raw = ["Yes.", "Yes, there is a bowl.", "Yes", "The book rests on the bowl.", "A book on a bowl."]
    judged = judge_from_answers(raw, ARB, BRA)
    assert isinstance(judged, ProtocolAnswers)
    assert judged.raw == raw
    assert (judged.q1, judged.q2, judged.q3, judged.choice) == (True, True, True, "ARB")
    assert judged.has_a and judged.has_b and judged.objects_ok
    assert judged.verdict == "ARB"
    assert judged.unparseable == []


def test_judge_from_answers_missing_object_and_unparseable():
    raw = ["No, there is no book.", "Yes", "I'm not sure.", "Hard to say.", "Hmm, both?"]
    judged = judge_from_answers(raw, ARB, BRA)
    assert (judged.q1, judged.q2, judged.q3) == (False, True, None)
    assert not judged.has_a and judged.has_b and not judged.objects_ok
    assert judged.verdict is None
    assert judged.unparseable == [3, 5]


def test_judge_from_answers_reads_questions_1_to_3_about_their_objects():
    raw = ["There are two dogs in the picture.", "Yes", "Yes", "A dog near a bowl.", "A book on a bowl."]
    judged = judge_from_answers(raw, ARB, BRA, ("book", "bowl"))
    assert judged.q1 is None and judged.unparseable == [1]
    assert not judged.objects_ok and judged.choice == "ARB"


def test_judge_from_answers_needs_five_answers():
    with pytest.raises(RRNetError, match="5"):
        judge_from_answers(["Yes", "Yes", "Yes", "A book on a bowl."], ARB, BRA)
