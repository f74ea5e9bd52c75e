"""The RRNet paper's five-question VLM protocol (Appendix D.2): the questions and answer parsing.

A vision-language model is asked, per image of the triplet (A, R, B):
1-3 whether A, B and both are present (yes/no), 4 a free-form description of the relation
(context for the model, not scored), and 5 which of the two sentences "A R B" / "B R A" the
image shows, or neither. Parsers return None rather than guess: an unclear answer should be
counted as unparseable, not silently as a yes or a no.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from rrnet.errors import RRNetError

NUM_QUESTIONS = 5
SCORED_YES_NO = (1, 2, 3)
CHOICE_QUESTION = 5

# ---------------------------------------------------------------------------------------------
# Questions
# ---------------------------------------------------------------------------------------------


def _sentence(prompt: str) -> str:
    """A prompt as it appears inside a question: trimmed, without a trailing full stop."""
    return " ".join(prompt.split()).rstrip(".")


def questions(a: str, b: str, prompt_arb: str, prompt_bra: str) -> list[str]:
    """The five questions, in order, with short answer-format instructions appended."""
    arb, bra = _sentence(prompt_arb), _sentence(prompt_bra)
    yes_no = "Answer yes or no."
    return [
        f"Is there any {a} in the image? {yes_no}",
        f"Is there any {b} in the image? {yes_no}",
        f"Are both {a} and {b} present in the image? {yes_no}",
        f"Can you infer the relationship that exists between {a} and {b} in the image?",
        (
            f"Is there {arb} or {bra} or neither? "
            f"Answer with one of: '{arb}', '{bra}', or 'neither'."
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Yes / no
# ---------------------------------------------------------------------------------------------

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})

# Hedges make an answer unusable whatever else it says.
_HEDGE = re.compile(
    r"\b(yes and no|yes or no|not sure|unsure|uncertain|unclear|hard to (say|tell)|"
    r"difficult to (say|tell|determine)|can ?not (determine|tell|say)|can't (determine|tell|say)|"
    r"maybe|perhaps|possibly|might be|may be|it depends|ambiguous)\b"
)
_LEAD_NO = re.compile(
    r"^(no|nope|nah|not|never|neither|none|negative|false|incorrect|"
    r"(absolutely|definitely|certainly|of course|surely) not)\b"
)
_LEAD_YES = re.compile(
    r"^(yes|yeah|yep|yup|yea|absolutely|definitely|certainly|sure|indeed|correct|"
    r"affirmative|true|of course)\b"
)
_BODY_NO = re.compile(
    r"\b(there (is|are) no|there (isn't|aren't|is not|are not)|no \w+ (is|are) (visible|present)|"
    r"(don't|do not|cannot|can't|can not) see|(is|are|isn't|aren't) not (visible|present|shown)|"
    r"(isn't|aren't) (visible|present|shown|there)|(does not|doesn't) (contain|show|include|appear)|"
    r"(do not|don't) (appear|think so)|absent|missing|neither|none|no|not)\b"
)
_BODY_YES = re.compile(
    r"\b(there (is|are) (a|an|one|two|some|several|many|both)|(i can|i) see|"
    r"(is|are) (visible|present|shown)|(contains|shows|includes) (a|an|one|two|some|both)|"
    r"both are|i think so|appears to (be|have|contain))\b"
)


def _clean(text: str) -> str:
    """Lower-case, plain quotes, single spaces, and no leading markup or an 'Answer:' label."""
    text = " ".join(text.translate(_QUOTES).lower().split())
    text = re.sub(r"^[^a-z0-9]+", "", text)
    text = re.sub(r"^(answer|a|response)\s*:\s*", "", text)
    return re.sub(r"^[^a-z0-9]+", "", text)


def _mentions(cleaned: str, thing: str) -> bool:
    """Whether the answer names `thing` (its words in order; a plural last word counts)."""
    words = re.findall(r"[a-z0-9]+", thing.lower())
    if not words:
        return False
    parts = [re.escape(word) for word in words]
    parts[-1] += r"(?:s|es)?"
    return re.search(r"\b" + r"[\s-]+".join(parts) + r"\b", cleaned) is not None


def _affirms(cleaned: str, about: Sequence[str]) -> bool:
    """A sentence-style yes counts only for what was asked: every asked object is named (or, for
    several, the answer says "both"). "There are two dogs" does not answer "Is there any book?"."""
    if not about:
        return False
    if all(_mentions(cleaned, thing) for thing in about):
        return True
    return len(about) > 1 and re.search(r"\bboth\b", cleaned) is not None


def parse_yes_no(text: str, about: Sequence[str] = ()) -> bool | None:
    """True/False for a clear yes/no answer, None when hedged, contradictory, off-topic or empty.

    A leading yes/no word decides ("No, but I can see a dog" is a no to "Is there a cat?").
    Without one, sentence cues decide only when all cues agree, and a sentence-style yes must
    name the asked object(s) `about`: an answer that does not clearly affirm them is not a yes.
    """
    cleaned = _clean(text)
    if not cleaned or _HEDGE.search(cleaned):
        return None
    if _LEAD_NO.match(cleaned):
        return False
    if _LEAD_YES.match(cleaned):
        return True
    negative, positive = bool(_BODY_NO.search(cleaned)), bool(_BODY_YES.search(cleaned))
    if negative == positive:
        return None
    if positive and not _affirms(cleaned, about):
        return None
    return positive


# ---------------------------------------------------------------------------------------------
# Sentence choice
# ---------------------------------------------------------------------------------------------

_BREAK = "|"
_ARTICLES = frozenset({"a", "an", "the"})
_NEGATORS = frozenset({"not", "nor", "neither", "no", "never", "isnt", "arent", "doesnt", "dont",
                       "rather", "instead"})
_NEITHER = frozenset({"neither", "none"})
_MAX_EXTRA_WORDS = 3  # words an answer may insert inside an option ("is placed", "sits")
_NEGATION_LOOKBACK = 2


def _tokens(text: str) -> list[str]:
    """Words without articles, apostrophes or quotes; clause punctuation becomes a break token."""
    text = text.translate(_QUOTES).lower().replace("'", "")
    text = re.sub(r"[.,;:!?()\[\]\n]", f" {_BREAK} ", text)
    text = re.sub(r"[^a-z0-9|]+", " ", text)
    out: list[str] = []
    for word in text.split():
        if word in _ARTICLES or (word == _BREAK and (not out or out[-1] == _BREAK)):
            continue
        out.append(word)
    while out and out[-1] == _BREAK:
        out.pop()
    return out


def _option_tokens(prompt: str) -> list[str]:
    return [word for word in _tokens(prompt) if word != _BREAK]


def _match_starts(words: list[str], option: list[str]) -> list[int]:
    """Start indices where `option` occurs in order within one clause, allowing a few extra words.

    Word order is what separates "A R B" from "B R A", so options are matched as ordered
    subsequences, never as bags of words. Inserted words may not be option words, so a
    window cannot stitch an option together from two neighbouring mentions.
    """
    starts = []
    vocabulary = set(option)
    limit = len(option) + _MAX_EXTRA_WORDS
    for start, word in enumerate(words):
        if word != option[0]:
            continue
        matched, pos = 1, start + 1
        while matched < len(option) and pos < len(words) and pos - start < limit:
            if words[pos] == option[matched]:
                matched += 1
            elif words[pos] == _BREAK or words[pos] in vocabulary:
                break  # fillers may not be clause breaks or the option's own words
            pos += 1
        if matched == len(option):
            starts.append(start)
    return starts


def _negated(words: list[str], start: int) -> bool:
    """Whether a negator ("not", "nor", "rather than") sits just before `start` in its clause."""
    for pos in range(start - 1, max(start - 1 - _NEGATION_LOOKBACK, -1), -1):
        if words[pos] == _BREAK:
            return False
        if words[pos] in _NEGATORS:
            return True
    return False


def _affirmed(words: list[str], option: list[str]) -> bool:
    return any(not _negated(words, start) for start in _match_starts(words, option))


def parse_choice(text: str, prompt_arb: str, prompt_bra: str) -> str | None:
    """Return "ARB", "BRA" or "neither" when the answer clearly picks exactly one, else None.

    Case, punctuation, quotes and articles are ignored; an option mentioned only under a
    negation ("not a book on a bowl") does not count as chosen.
    """
    words = _tokens(text)
    arb, bra = _option_tokens(prompt_arb), _option_tokens(prompt_bra)
    if not words or not arb or not bra:
        return None
    chosen = set()
    if arb != bra:
        if _affirmed(words, arb):
            chosen.add("ARB")
        if _affirmed(words, bra):
            chosen.add("BRA")
    if _NEITHER & set(words):
        chosen.add("neither")
    return chosen.pop() if len(chosen) == 1 else None


# ---------------------------------------------------------------------------------------------
# Judging
# ---------------------------------------------------------------------------------------------


@dataclass
class ProtocolAnswers:
    """Raw answers to the five questions and their parsed values (None = unparseable)."""

    raw: list[str]
    q1: bool | None
    q2: bool | None
    q3: bool | None
    choice: str | None
    unparseable: list[int] = field(default_factory=list)

    @property
    def has_a(self) -> bool:
        return self.q1 is True

    @property
    def has_b(self) -> bool:
        return self.q2 is True

    @property
    def objects_ok(self) -> bool:
        """Both objects confirmed three times over; an unparseable answer counts as not confirmed."""
        return self.q1 is True and self.q2 is True and self.q3 is True

    @property
    def verdict(self) -> str | None:
        """The choice: "ARB", "BRA", "neither", or None when question 5's answer could not be parsed.

        Question 5 alone does not make an image correct: `JudgeResult.correct` also needs
        questions 1-3 to confirm both objects.
        """
        return self.choice


def judge_from_answers(
    answers: Sequence[str], prompt_arb: str, prompt_bra: str, objects: tuple[str, str] = ("", "")
) -> ProtocolAnswers:
    """Parse the five raw answers (question 4 is kept but not scored).

    `objects` (A, B) are what questions 1-3 ask about; a sentence-style answer must name them to
    count as a yes (a bare "Yes" always does).
    """
    if len(answers) != NUM_QUESTIONS:
        raise RRNetError(f"expected {NUM_QUESTIONS} answers to the VLM protocol, got {len(answers)}")
    raw = [str(answer) for answer in answers]
    a, b = objects
    asked = {1: (a,), 2: (b,), 3: (a, b)}
    q1, q2, q3 = (parse_yes_no(raw[number - 1], tuple(x for x in asked[number] if x)) for number in SCORED_YES_NO)
    choice = parse_choice(raw[CHOICE_QUESTION - 1], prompt_arb, prompt_bra)
    parsed = {1: q1, 2: q2, 3: q3, CHOICE_QUESTION: choice}
    unparseable = [number for number, value in parsed.items() if value is None]
    return ProtocolAnswers(raw=raw, q1=q1, q2=q2, q3=q3, choice=choice, unparseable=unparseable)
