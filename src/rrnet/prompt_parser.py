"""Find the (A, R, B) triplets a prompt states, given the relation phrases a rectifier knows.

No model and no download: a relation is one of the known phrases ("on the left of", "is placed
on", "above"), matched as whole words, the longest match winning; A and B are the noun phrases
just before and after it. Articles, "there is", counts and auxiliaries are dropped; adjectives such
as colours stay with their noun ("a red circle" -> "red circle"). Several relations in one
prompt are returned in order ("A above B and C left of the B", chains "A above B left of C").
A prompt the parser cannot read gives no triplet, and the caller decides what that means.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

Triplet = tuple[str, str, str]

_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*|[,.;:!?()]")
# Where one statement ends and the next begins.
CLAUSE_BREAKS = frozenset({",", ".", ";", ":", "!", "?", "(", ")", "and", "but", "or", "while", "whereas", "then",
                           "that", "which", "who", "where", "whose"})
# Dropped from the front of a noun phrase.
DETERMINERS = frozenset({"a", "an", "the", "this", "that", "these", "those", "some", "any", "each", "every", "another",
                         "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "several",
                         "many", "few", "its", "their", "his", "her", "my", "our", "your"})
FILLERS = (("there", "is"), ("there", "are"), ("there", "was"), ("there", "were"), ("here", "is"), ("here", "are"))
# "an oil painting of | a lamp": everything up to "<medium> of" is about the picture, not the object.
MEDIA = frozenset({"photo", "photograph", "picture", "image", "painting", "drawing", "illustration", "sketch", "render",
                   "rendering", "shot", "snapshot", "poster", "cartoon"})
# Dropped from the end of the noun phrase before a relation ("a book is | placed on").
AUXILIARIES = frozenset({"is", "are", "was", "were", "be", "being", "been", "am", "gets", "get", "got", "stays", "remains",
                         "sits", "sit", "sitting", "stands", "stand", "standing", "lies", "lie", "lying", "rests", "resting",
                         "hangs", "hanging", "placed", "located", "positioned", "situated", "put", "set", "kept",
                         "appears", "seems", "just", "directly", "right", "also", "slightly", "clearly"})
# Dropped from the front of the noun phrase after a relation ("placed | on a bowl").
PREPOSITIONS = frozenset({"on", "onto", "in", "into", "at", "of", "to", "by", "under", "over", "above", "below", "from",
                          "with", "inside", "beside", "behind", "near", "next", "beneath", "top", "upon", "against"})
# End the noun phrase after a relation ("a cup on a table | in the kitchen").
PHRASE_ENDS = frozenset({"in", "at", "on", "under", "near", "beside", "behind", "inside", "over", "during", "for", "from",
                         "by", "with", "without", "into", "onto", "toward", "towards", "while", "as"})


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks, as the parser sees them."""
    return _WORD.findall(text.lower())


def phrase_between(prompt: str, object_a: str, object_b: str) -> str | None:
    """The words between A and B in `prompt` without trailing articles ("is placed on"), or None.

    When A is named more than once (a prompt stating several relations: "a red circle above a blue
    square and the red circle left of a green triangle"), the closest A before B is taken, so the
    phrase is the relation's own words and never spans another clause."""
    w, a, b = words(prompt), words(object_a), words(object_b)
    middle = None
    start = _find(w, a, 0)
    while start is not None:
        end = _find(w, b, start + len(a))
        if end is None:
            break
        if middle is None or end - start - len(a) < len(middle):
            middle = w[start + len(a):end]
        start = _find(w, a, start + 1)
    if middle is None:
        return None
    while middle and middle[-1] in DETERMINERS:
        middle = middle[:-1]
    return " ".join(middle) or None


def relation_phrases(relations: Iterable[tuple[Sequence[str], Sequence[str]]]) -> dict[str, str]:
    """Phrase -> relation word, from (triplet, the prompts that state it) pairs: each relation word
    itself, plus the words between its objects in its prompts ("a book is placed on a bowl" gives
    "is placed on" -> "placed")."""
    out: dict[str, str] = {}
    relations = [(tuple(t), list(prompts)) for t, prompts in relations]
    for (_, relation, _), _ in relations:
        out.setdefault(" ".join(words(relation)), relation)
    for (a, relation, b), prompts in relations:
        for prompt in prompts:
            for x, y in ((a, b), (b, a)):
                phrase = phrase_between(prompt, x, y)
                if phrase and _find(words(phrase), words(relation), 0) is not None:
                    out.setdefault(phrase, relation)
    return out


def _find(haystack: list[str], needle: list[str], start: int) -> int | None:
    for i in range(start, len(haystack) - len(needle) + 1):
        if haystack[i:i + len(needle)] == needle:
            return i
    return None


def _strip_front(phrase: list[str]) -> list[str]:
    media = [i for i in range(len(phrase) - 1) if phrase[i] in MEDIA and phrase[i + 1] == "of"]
    if media:
        phrase = phrase[media[-1] + 2:]
    changed = True
    while changed and phrase:
        changed = False
        for filler in FILLERS:
            if tuple(phrase[:len(filler)]) == filler:
                phrase, changed = phrase[len(filler):], True
        if phrase and phrase[0] in DETERMINERS:
            phrase, changed = phrase[1:], True
    return phrase


def _subject(segment: list[str]) -> list[str]:
    """The noun phrase ending a clause segment, before a relation phrase ("a cup is to the | right of")."""
    while segment and segment[-1] in AUXILIARIES | DETERMINERS | PREPOSITIONS:
        segment = segment[:-1]
    return _strip_front(segment)


def _object(segment: list[str]) -> list[str]:
    """The noun phrase starting a clause segment, after a relation phrase."""
    while segment and segment[0] in PREPOSITIONS:
        segment = segment[1:]
    segment = _strip_front(segment)
    for i, word in enumerate(segment):
        if word in PHRASE_ENDS and i > 0:
            return segment[:i]
    return segment


def _relation_matches(w: list[str], phrases: Mapping[str, str]) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, relation) matches, longest phrases first."""
    candidates = []
    for phrase, relation in phrases.items():
        p = words(phrase)
        for i in range(len(w) - len(p) + 1):
            if p and w[i:i + len(p)] == p:
                candidates.append((i, i + len(p), relation))
    candidates.sort(key=lambda c: (-(c[1] - c[0]), c[0]))
    taken: list[tuple[int, int, str]] = []
    for c in candidates:
        if all(c[1] <= t[0] or c[0] >= t[1] for t in taken):
            taken.append(c)
    return sorted(taken)


def parse_relations(prompt: str, phrases: Mapping[str, str]) -> list[Triplet]:
    """Every (A, relation word, B) the prompt states with a known phrase, in prompt order.

    A relation whose subject or object cannot be found (or is the same noun phrase) is skipped.
    """
    w = words(prompt)
    matches: list[tuple[int, int, str]] = []
    for start, end, relation in _relation_matches(w, phrases):
        if matches and matches[-1][1] == start:  # "placed | on": one predicate, named by its first phrase
            matches[-1] = (matches[-1][0], end, matches[-1][2])
        else:
            matches.append((start, end, relation))
    out: list[Triplet] = []
    for k, (start, end, relation) in enumerate(matches):
        left_limit = matches[k - 1][1] if k else 0
        right_limit = matches[k + 1][0] if k + 1 < len(matches) else len(w)
        before = w[left_limit:start]
        breaks = [i for i, word in enumerate(before) if word in CLAUSE_BREAKS]
        before = before[breaks[-1] + 1:] if breaks else before
        after = w[end:right_limit]
        breaks = [i for i, word in enumerate(after) if word in CLAUSE_BREAKS]
        after = after[:breaks[0]] if breaks else after
        a, b = " ".join(_subject(before)), " ".join(_object(after))
        if a and b and a != b:
            out.append((a, relation, b))
    return out
