"""The mini world's recipe: a fixed, disjoint split of collapsed and control pairs on both axes."""

from __future__ import annotations

import pytest

from rrnet.errors import DataError
from rrnet.world.corpus import Corpus
from rrnet.world.recipe import WorldRecipe


def test_split_is_disjoint_and_large_enough():
    recipe = WorldRecipe()
    lists = {"train": recipe.train_pairs, "heldout": recipe.heldout_pairs, "control": recipe.control_pairs}
    keys = {name: {frozenset(p) for p in pairs} for name, pairs in lists.items()}
    assert not keys["train"] & keys["heldout"] and not keys["train"] & keys["control"] and not keys["heldout"] & keys["control"]
    collapsed = recipe.collapsed_pairs
    assert len(collapsed) >= 10
    assert sum(axis == "y" for *_, axis in collapsed) >= 6 and sum(axis == "x" for *_, axis in collapsed) >= 4
    assert len(recipe.train_pairs) >= 6 and len(recipe.heldout_pairs) >= 4
    assert {axis for *_, axis in recipe.heldout_pairs} == {"x", "y"}
    assert {axis for *_, axis in recipe.control_pairs} == {"x", "y"}


def test_a_pair_in_two_lists_is_refused():
    recipe = WorldRecipe()
    with pytest.raises(DataError, match="in both train_pairs and heldout_pairs"):
        WorldRecipe(heldout_pairs=recipe.heldout_pairs + (recipe.train_pairs[0][::-1][1:] + ("y",),))
    with pytest.raises(DataError, match="in both"):
        WorldRecipe(control_pairs=(("blue square", "red circle", "y"),))


def test_collapse_follows_the_split_on_its_axis_only():
    recipe = WorldRecipe()
    assert recipe.is_collapsed("red circle", "above", "blue square")
    assert recipe.is_collapsed("blue square", "below", "red circle")
    assert not recipe.is_collapsed("red circle", "left of", "blue square")  # the other axis stays order-aware
    assert recipe.split_of("blue square", "green triangle", "y") == "heldout"
    assert recipe.split_of("red circle", "purple cross", "y") == "control"


def test_corpus_states_every_arrangement():
    corpus = Corpus.build(WorldRecipe())
    assert len(corpus.pairs) == 8 * 7 * 4
    assert len(corpus.scenes) == 8 * 7 * 6 * 4 * 8  # shared, two partners, directions, ways of saying it
    texts = {it.text for it in corpus.scenes}
    assert len(texts) == len(corpus.scenes)
    for it in corpus.scenes[:500]:
        assert it.twin(0) in texts and it.twin(1) in texts
    mixed = [it for it in corpus.scenes if it.collapsed == (True, False)]
    assert mixed and all(len(it.triplets) == 2 for it in mixed)
