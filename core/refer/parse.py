"""Parse a referring expression: head noun, direction, ordinal (spaCy).

"the second dog from the left" -> :class:`Expression` (noun ``dog``, direction ``left``,
ordinal 2). Typos of direction words are fixed, multi-word direction phrases understood.
"""
from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from core.models import load_spacy

# --------------------------------------------------------------------------------------
# Direction vocabulary
# --------------------------------------------------------------------------------------

#: Canonical directions :func:`parse` returns and :func:`choose` accepts.
DIRECTIONS = (
    "left", "right", "top", "bottom", "center",
    "top-left", "top-right", "bottom-left", "bottom-right",
)

#: Each direction word maps to one component: a horizontal side, a vertical side, or center.
_DIRECTION_WORDS: dict[str, str] = {
    **dict.fromkeys(["left", "leftmost", "lefthand"], "left"),
    **dict.fromkeys(["right", "rightmost", "righthand"], "right"),
    **dict.fromkeys(
        ["top", "topmost", "upper", "uppermost", "upmost", "above", "up", "higher", "highest"], "top"
    ),
    **dict.fromkeys(
        ["bottom", "bottommost", "lower", "lowest", "lowermost", "below", "down", "under",
         "underneath", "beneath"],
        "bottom",
    ),
    **dict.fromkeys(["middle", "center", "centre", "central", "centered", "centred", "between", "mid"],
                    "center"),
}

#: Shorthands people type that edit distance 1 would not reach.
_ABBREVIATIONS = {"lft": "left", "rgt": "right", "rght": "right", "btm": "bottom", "ctr": "center"}

#: Direction words long enough to be typo targets (short words like "up" would match too much).
_TYPO_TARGETS = tuple(w for w in _DIRECTION_WORDS if len(w) >= 4)

#: Real words one edit away from a direction word that the lemmatizer's word index lacks;
#: never "corrected".
_REAL_WORDS_EXTRA = frozenset({"lest", "upped", "rights", "lefts", "tops", "sides", "enter", "entre"})

#: Words glued to a direction word in real data ("leftside", "topleft").
_GLUED = re.compile(
    r"\b(top|bottom|upper|lower|far)(left|right|middle|center)\b|\b(left|right)(side|corner|hand)\b"
)

#: Next words that make "left"/"right" a body side, not a position in the image.
_BODY_PARTS = frozenset(
    {"hand", "hands", "arm", "arms", "leg", "legs", "foot", "feet", "ear", "ears", "eye", "eyes",
     "shoulder", "shoulders", "knee", "knees", "wrist", "elbow", "side-mirror", "shoe", "glove"}
)

#: Words that belong to a direction phrase and are removed with it before finding the noun.
_PHRASE_BEFORE = frozenset(
    {"far", "very", "extreme", "most", "the", "on", "to", "at", "in", "from", "towards", "toward",
     "of", "near", "nearest", "closest", "all", "way"}
)
_PHRASE_AFTER = frozenset(
    {"side", "sides", "corner", "corners", "part", "edge", "end", "most", "half", "area", "portion",
     "section", "hand", "-", "of", "the", "picture", "image", "photo", "pic", "frame", "screen",
     "photograph", "row", "one"}
)
_FRAME_NOUNS = frozenset({"picture", "image", "photo", "pic", "frame", "screen", "photograph", "shot", "view"})

#: Nouns that cannot name the target ("the one on the left", "left side").
_NOT_TARGETS = _FRAME_NOUNS | frozenset(
    {"one", "ones", "side", "corner", "part", "edge", "end", "half", "area", "portion", "section",
     "thing", "things", "spot", "row", "bit", "front", "back", "left", "right", "top", "bottom",
     "middle", "center", "centre", "way", "lot"}
)
#: Nouns naming a portion of something else ("piece of cake" -> cake).
_PARTITIVES = frozenset(
    {"piece", "pieces", "slice", "slices", "bunch", "group", "pair", "couple", "set", "portion",
     "part", "half", "kind", "type", "stack", "pile", "bit", "chunk", "section", "row", "lot", "side"}
)

_ORDINALS = {
    "first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4,
    "fifth": 5, "5th": 5, "sixth": 6, "6th": 6, "seventh": 7, "7th": 7, "eighth": 8, "8th": 8,
    "ninth": 9, "9th": 9, "tenth": 10, "10th": 10,
}


@dataclass(frozen=True)
class Expression:
    """A parsed referring expression.

    text: the input sentence, unchanged.
    noun: lemmatised lower-case head noun of the phrase naming the target ("dog"), or None.
    direction: one of :data:`DIRECTIONS`, or None when the sentence names no position.
    ordinal: which one counting from that side (``"second from the right"`` -> 2); 1 otherwise.
    direction_words: the words (after typo correction) the direction came from, in order.
    corrections: (typed, corrected) pairs for the typos that were fixed ("botom" -> "bottom").
    subject: the sentence with direction and ordinal phrases removed ("the dog with a hat"),
        the text the noun was read from.
    noun_phrase: the spaCy noun chunk that holds the head of the whole sentence, as Global-Local
        CLIP reads it ("the man in a red shirt on the left" -> "the man"); see
        :func:`noun_phrase_of`. "" when the record was built by hand (then the sentence is used).
    """

    text: str
    noun: str | None
    direction: str | None
    ordinal: int = 1
    direction_words: tuple[str, ...] = ()
    corrections: tuple[tuple[str, str], ...] = ()
    subject: str = ""
    noun_phrase: str = ""

    @property
    def noun_prompt(self) -> str:
        """CLIP prompt for the local (object) score: "a photo of a {noun}." (the subject when no noun)."""
        if self.noun:
            return f"a photo of a {self.noun}."
        subject = self.subject.strip() or self.text.strip()
        return f"a photo of {subject}."

    def to_dict(self) -> dict:
        """JSON-friendly dict of the fields (tuples become lists) plus ``noun_prompt``."""
        out = asdict(self)
        out["direction_words"] = list(self.direction_words)
        out["corrections"] = [list(pair) for pair in self.corrections]
        out["noun_prompt"] = self.noun_prompt
        return out


#: Longest referring expression :func:`parse` accepts, in characters (RefCOCOg sentences are
#: under 300); longer input is refused before spaCy runs, so no caller holds the parser's lock
#: for long.
MAX_EXPRESSION_CHARS = 500

#: spaCy pipelines are not documented as thread-safe; the app calls parse() from worker threads.
_NLP_LOCK = threading.Lock()


def _nlp():
    """The shared spaCy pipeline (core.models.load_spacy, loaded once per process)."""
    return load_spacy()


@lru_cache(maxsize=4)
def _known_words(nlp) -> frozenset[str]:
    """English words from the lemmatizer's WordNet index (a fixed dictionary, ~90k words)."""
    words: set[str] = set()
    try:
        index = nlp.get_pipe("lemmatizer").lookups.get_table("lemma_index")
        for _, entries in index.items():
            words.update(w for w in entries if w.isalpha())
    except (KeyError, ValueError, AttributeError):  # a pipeline without the rule lemmatizer
        pass
    return frozenset(words)


def is_known_word(word: str) -> bool:
    """True when `word` is in the English dictionary the parser corrects typos against (the
    lemmatizer's WordNet index), or a plural of one of its words; also True when the
    pipeline has no such dictionary (nothing to judge by). "qwerty" -> False, "dog" -> True."""
    nlp = _nlp()
    with _NLP_LOCK:
        known = _known_words(nlp)
    w = (word or "").strip().lower()
    return (not known or not w.isalpha() or w in known or w in _REAL_WORDS_EXTRA
            or (w.endswith("s") and w[:-1] in known))


def _edit_distance_at_most_1(a: str, b: str) -> bool:
    """True when a and b differ by at most one insertion, deletion, substitution or swap."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    short, long_ = (a, b) if la < lb else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1:]


def _correct_word(word: str, known: frozenset[str]) -> str | None:
    """The direction word ``word`` is a typo of, or None.

    Guarded so ordinary words stay themselves: only alphabetic words of 4+ letters that are not
    in the English dictionary (nor plurals of its words) are corrected, and only when exactly
    one direction word is one edit away ("botom" -> "bottom", but "light" stays "light").
    """
    if word in _ABBREVIATIONS:
        return _ABBREVIATIONS[word]
    if len(word) < 4 or not word.isalpha() or word in _DIRECTION_WORDS:
        return None
    if word in known or word in _REAL_WORDS_EXTRA or (word.endswith("s") and word[:-1] in known):
        return None
    matches = {t for t in _TYPO_TARGETS if _edit_distance_at_most_1(word, t)}
    matches = {_DIRECTION_WORDS[t] + ":" + t for t in matches}
    if len(matches) != 1:
        return None
    return matches.pop().split(":", 1)[1]


def _normalise(text: str) -> str:
    """Lower-case, unglue compound direction words and hyphens ("top-left" -> "top - left")."""
    out = text.lower().replace("_", " ")
    out = re.sub(r"\bw/(?=\s|[a-z])", "with ", out)
    out = re.sub(r"\b(left|right|top|bottom|up|low)\s*-\s*most\b", r"\1most", out)
    out = _GLUED.sub(lambda m: " ".join(g for g in m.groups() if g), out)
    out = re.sub(r"(?<=[a-z])-(?=[a-z])", " - ", out)
    return re.sub(r"\s+", " ", out).strip()


def _validate_text(text) -> str:
    if not isinstance(text, str):
        raise ValueError(f"a referring expression must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("a referring expression must not be empty")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"a referring expression must be at most {MAX_EXPRESSION_CHARS} characters, "
                         f"got {len(text)}")
    if not re.search(r"[A-Za-z0-9]", text):
        raise ValueError(f"a referring expression needs words, got {text!r}")
    return text


def _is_direction_token(doc, i: int, word: str) -> bool:
    """Whether token i (already typo-corrected to ``word``) names a position in the image."""
    tok = doc[i]
    nxt = doc[i + 1].text if i + 1 < len(doc) else ""
    if word in ("left", "right") and nxt in _BODY_PARTS:
        after = doc[i + 2].text if i + 2 < len(doc) else ""
        return nxt == "hand" and after == "side"  # "the right hand side" is a position
    if word in ("up", "down"):
        # particles of verbs ("standing up", "looking down", "upside down") are not positions
        prev = doc[i - 1].text if i > 0 else ""
        if tok.dep_ == "prt" or prev in ("upside", "face", "sitting", "standing", "lying", "laying"):
            return False
    if word == "left" and tok.tag_ in ("VBD", "VBN") and i > 0 and doc[i - 1].lemma_ in ("be", "have", "get"):
        return False  # "the one that was left"
    return True


def _combine_direction(components: list[str]) -> str | None:
    """One canonical direction from the components found, first one per axis wins."""
    horizontal = next((c for c in components if c in ("left", "right")), None)
    vertical = next((c for c in components if c in ("top", "bottom")), None)
    if horizontal and vertical:
        return f"{vertical}-{horizontal}"
    if horizontal or vertical:
        return horizontal or vertical
    return "center" if "center" in components else None


def _phrase_span(words: list[str], start: int, end: int) -> tuple[int, int]:
    """Grow [start, end) over the words that belong to a direction phrase
    ("on the far left side of the picture")."""
    while start > 0 and words[start - 1] in _PHRASE_BEFORE:
        start -= 1
    while end < len(words) and words[end] in _PHRASE_AFTER:
        if words[end] == "of":
            # only "of the picture" belongs to the phrase, not "left of the dog"
            j = end + 1
            while j < len(words) and words[j] == "the":
                j += 1
            if j >= len(words) or words[j] not in _FRAME_NOUNS:
                break
        if words[end] == "the" and (end + 1 >= len(words) or words[end + 1] not in _PHRASE_AFTER):
            break
        end += 1
    # a trailing "of"/"the"/"-" left over belongs to what follows, not to the phrase
    while end > start and words[end - 1] in ("of", "the", "-") and end < len(words):
        end -= 1
    return start, end


def _head_noun(doc) -> str | None:
    """Lemma of the noun heading the target phrase in a parsed ``doc``, or None.

    The target is the noun nearest the root that is not inside a modifier (a prepositional
    object, relative clause ...); compounds defer to the noun they modify ("tennis player" ->
    "player"); partitives defer to their object ("piece of cake" -> "cake").
    """
    def usable(tok) -> bool:
        return (
            tok.pos_ in ("NOUN", "PROPN", "X")
            and tok.text.isalpha()
            and tok.lemma_.lower() not in _NOT_TARGETS
            and tok.text not in _ORDINALS
            and tok.text not in _DIRECTION_WORDS
        )

    def depth(tok) -> tuple[int, int]:
        d, inside_modifier = 0, 0
        while tok.head.i != tok.i:
            if tok.dep_ in ("pobj", "relcl", "acl", "prep", "advcl", "dobj", "conj", "appos", "pcomp"):
                inside_modifier += 1
            d += 1
            tok = tok.head
        return inside_modifier, d

    nouns = [t for t in doc if usable(t)]
    if not nouns:
        # the tagger sometimes calls a lone noun an adjective or a verb ("zebra", "left guy")
        nouns = [t for t in doc if t.pos_ in ("ADJ", "VERB") and t.text.isalpha() and t.is_alpha
                 and t.dep_ == "ROOT" and t.lemma_.lower() not in _NOT_TARGETS
                 and t.text not in _DIRECTION_WORDS and t.text not in _ORDINALS and not t.is_stop]
        if not nouns:
            return None
    best = min(nouns, key=lambda t: (depth(t), t.i))
    while best.dep_ == "compound" and best.head.i != best.i and usable(best.head):
        best = best.head
    if best.lemma_.lower() in _PARTITIVES or best.text in _PARTITIVES:
        objects = [c for prep in best.children if prep.dep_ == "prep" and prep.text == "of"
                   for c in prep.children if c.dep_ == "pobj" and usable(c)]
        if objects:
            best = objects[0]
    lemma = best.lemma_.lower()
    return lemma if lemma.isalpha() else best.text


def noun_phrase_of(doc) -> str:
    """The noun phrase of a parsed sentence, by Global-Local CLIP's rule (text of ``doc`` if none).

    The head is the root of the dependency parse (the last root when spaCy splits the text into
    several sentences); if it is not inside a noun chunk, its first child is tried. The phrase is
    the noun chunk that holds the head: "the man in a red shirt on the left" -> "the man",
    "left dog" -> "left dog". When neither is in a chunk the whole text is returned.
    """
    chunks = {}
    for chunk in doc.noun_chunks:
        for i in range(chunk.start, chunk.end):
            chunks[i] = chunk
    roots = [t for t in doc if t.head.i == t.i]
    if not roots:
        return doc.text
    head = roots[-1]
    if head.i not in chunks:
        children = list(head.children)
        if not children or children[0].i not in chunks:
            return doc.text
        head = children[0]
    return chunks[head.i].text


def parse(text: str) -> Expression:
    """Parse a referring expression into noun, direction and ordinal (see :class:`Expression`).

    Case, punctuation and a missing determiner do not matter; typos of direction words one
    edit away are fixed ("botom" -> "bottom"), multi-word phrases ("far left", "on the left
    side", "top right corner") and corner combinations ("upper left") are understood, and an
    ordinal ("second from the right") is read. "right hand", "standing up", "upside down" are
    not directions. The noun phrase (:func:`noun_phrase_of`) is read from the whole sentence,
    lower-cased, typos fixed. Raises ValueError on a non-str or empty input, or one longer than
    :data:`MAX_EXPRESSION_CHARS` characters (checked before spaCy runs).

    >>> parse("the second dog from the left")   # doctest: +SKIP
    Expression(text='the second dog from the left', noun='dog', direction='left', ordinal=2, ...)
    """
    _validate_text(text)
    nlp = _nlp()
    with _NLP_LOCK:
        return _parse_locked(nlp, text)


def _parse_locked(nlp, text: str) -> Expression:
    """The body of :func:`parse`; the caller holds _NLP_LOCK."""
    known = _known_words(nlp)
    normalised = _normalise(text)
    words = [t.text for t in nlp.tokenizer(normalised)]
    corrections: list[tuple[str, str]] = []
    for i, w in enumerate(words):
        fixed = _correct_word(w, known)
        if fixed is not None:
            corrections.append((w, fixed))
            words[i] = fixed
    doc = nlp(" ".join(words))
    words = [t.text for t in doc]  # same tokens, re-tokenised text is stable for plain words

    components: list[str] = []
    direction_words: list[str] = []
    drop = np.zeros(len(words), dtype=bool)
    for i, w in enumerate(words):
        if w in _DIRECTION_WORDS and _is_direction_token(doc, i, w):
            components.append(_DIRECTION_WORDS[w])
            direction_words.append(w)
            start, end = _phrase_span(words, i, i + 1)
            drop[start:end] = True
    ordinal = 1
    for i, w in enumerate(words):
        if w in _ORDINALS:
            ordinal = _ORDINALS[w]
            drop[i] = True
            break

    subject_words = [w for w, d in zip(words, drop) if not d and re.search(r"[a-z0-9]", w)]
    subject = " ".join(subject_words)
    noun = _head_noun(nlp(subject)) if subject else None
    return Expression(
        text=text,
        noun=noun,
        direction=_combine_direction(components),
        ordinal=ordinal,
        direction_words=tuple(direction_words),
        corrections=tuple(corrections),
        subject=subject,
        noun_phrase=noun_phrase_of(doc),
    )
