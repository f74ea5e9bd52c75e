"""The triplet parser: real-style prompts, the official example relations, and prompts that must pass through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrnet.prompt_parser import parse_relations, phrase_between, relation_phrases

SHARED = Path(__file__).resolve().parents[2] / "shared" / "rr-examples"

WORDS = ("above", "below", "left of", "right of", "beneath", "contains", "on", "under", "riding", "holding", "chasing",
         "next to", "in front of", "behind", "inside", "placed", "feeding")
PROMPTS = {"placed": ["x is placed on y"], "left of": ["x on the left of y", "x to the left of y"],
           "right of": ["x on the right of y", "x to the right of y"], "riding": ["x is riding y"],
           "on": ["x is sitting on top of y"]}
PHRASES = relation_phrases([(("x", r, "y"), PROMPTS.get(r, [])) for r in WORDS])

CASES = [
    ("a red circle above a blue square", [("red circle", "above", "blue square")]),
    ("a blue square above a red circle", [("blue square", "above", "red circle")]),
    ("there is a panda below desk", [("panda", "below", "desk")]),
    ("There is a car beneath the bridge.", [("car", "beneath", "bridge")]),
    ("a book is placed on a bowl", [("book", "placed", "bowl")]),
    ("a bowl is placed on the book", [("bowl", "placed", "book")]),
    ("a cup placed on a plate", [("cup", "placed", "plate")]),
    ("a car contains bottle", [("car", "contains", "bottle")]),
    ("a dog on the left of a cat", [("dog", "left of", "cat")]),
    ("a dog to the left of a cat", [("dog", "left of", "cat")]),
    ("a dog left of a cat", [("dog", "left of", "cat")]),
    ("a cat to the right of a dog", [("cat", "right of", "dog")]),
    ("two dogs below three cats", [("dogs", "below", "cats")]),
    ("some apples on a wooden table", [("apples", "on", "wooden table")]),
    ("a wooden table under some apples", [("wooden table", "under", "apples")]),
    ("an astronaut riding a horse", [("astronaut", "riding", "horse")]),
    ("a horse is riding an astronaut", [("horse", "riding", "astronaut")]),
    ("a photo of a girl holding an umbrella", [("girl", "holding", "umbrella")]),
    ("a black cat chasing a white mouse", [("black cat", "chasing", "white mouse")]),
    ("A white mouse chasing a black cat", [("white mouse", "chasing", "black cat")]),
    ("a red apple next to a green pear", [("red apple", "next to", "green pear")]),
    ("a bicycle in front of a house", [("bicycle", "in front of", "house")]),
    ("a house behind a bicycle, at sunset", [("house", "behind", "bicycle")]),
    ("a cup on a table in the kitchen", [("cup", "on", "table")]),
    ("a teddy-bear on a sofa", [("teddy-bear", "on", "sofa")]),
    ("a small brown dog is sitting on top of a big red car", [("small brown dog", "on", "big red car")]),
    ("the woman's bag on the chair", [("woman's bag", "on", "chair")]),
    ("a ball inside a box", [("ball", "inside", "box")]),
    ("a girl feeding a giraffe", [("girl", "feeding", "giraffe")]),
    ("a giraffe feeding a girl", [("giraffe", "feeding", "girl")]),
    ("an oil painting of a lamp above a sleeping cat", [("lamp", "above", "sleeping cat")]),
    ("a glass bottle beneath a car", [("glass bottle", "beneath", "car")]),
    # two relations: in order, the shared object found twice
    ("a red circle above a blue square and a green triangle left of the blue square",
     [("red circle", "above", "blue square"), ("green triangle", "left of", "blue square")]),
    ("a red circle above a blue square and the blue square left of a green triangle",
     [("red circle", "above", "blue square"), ("blue square", "left of", "green triangle")]),
    ("a lamp above a table, a cat under the table", [("lamp", "above", "table"), ("cat", "under", "table")]),
    ("a red circle above a blue square left of a green triangle",
     [("red circle", "above", "blue square"), ("blue square", "left of", "green triangle")]),
]

PASS_THROUGH = [
    "a beautiful landscape at sunset",  # no relation phrase
    "above a blue square",  # no subject
    "a red circle above",  # no object
    "a dog and a cat",
    "a photo of a horse",
    "",
    "a cat above the cat",  # the same noun phrase on both sides
    "the leftover pizza",  # "left" inside another word is not "left of"
]


@pytest.mark.parametrize("prompt,expected", CASES)
def test_parser_finds_the_triplets(prompt, expected):
    assert parse_relations(prompt, PHRASES) == expected


@pytest.mark.parametrize("prompt", PASS_THROUGH)
def test_parser_finds_nothing_where_nothing_is_stated(prompt):
    assert parse_relations(prompt, PHRASES) == []


def test_longest_phrase_wins():
    phrases = {"on": "on", "left of": "left of", "on the left of": "left of"}
    assert parse_relations("a mug on the left of a laptop", phrases) == [("mug", "left of", "laptop")]
    assert parse_relations("a mug on a laptop", phrases) == [("mug", "on", "laptop")]


def test_phrases_come_from_the_trained_prompts():
    assert phrase_between("a book is placed on a bowl", "book", "bowl") == "is placed on"
    assert phrase_between("a bowl is placed on the book", "bowl", "book") == "is placed on"
    assert phrase_between("a book is placed on a bowl", "cup", "bowl") is None
    found = relation_phrases([(("book", "placed", "bowl"), ["a book is placed on a bowl", "a bowl is placed on the book"])])
    assert found == {"placed": "placed", "is placed on": "placed"}


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/rr-examples not present")
@pytest.mark.parametrize("name", ["below", "beneath", "contain", "place"])
def test_parser_reads_the_official_example_relations(name):
    index = json.loads((SHARED / name / "index.json").read_text())
    a, r, b = index["A"], index["R"], index["B"]
    phrases = relation_phrases([((a, r, b), [index["ARB"], index["BRA"]])])
    for key in ("ARB", "ARB_dir"):
        assert parse_relations(index[key], phrases) == [(a, r, b)]
    for key in ("BRA", "BRA_dir"):
        assert parse_relations(index[key], phrases) == [(b, r, a)]
