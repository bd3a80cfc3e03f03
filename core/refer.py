"""Referring expressions: parse a sentence, choose a candidate by direction, ground it in an image.

Orientation-aware zero-shot referring segmentation (see DESIGN.md, item 2) in three stages,
each usable alone:

1. :func:`parse` turns "the second dog from the left" into an :class:`Expression`
   (head noun ``dog``, direction ``left``, ordinal 2) with spaCy.
2. :func:`choose` picks one of N scored candidate boxes by that direction: among the
   ``top_k`` best-scored candidates, the one lying furthest in the direction.
3. :func:`ground` scores SAM's automatic masks (or masks you pass in) against the sentence
   with CLIP Global-Local features and calls :func:`choose`; it returns a
   :class:`Grounding` with the chosen mask and every ranked candidate, so a UI can explain
   the choice.

Conventions: images HWC uint8 RGB; masks HxW bool; boxes XYXY float pixels of the original
image (x2/y2 exclusive); ``image_size`` is (width, height).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import threading
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

__all__ = [
    "DIRECTIONS",
    "Expression",
    "parse",
    "choose",
    "direction_order",
    "SCORINGS",
    "GroundingSettings",
    "CandidateFeatures",
    "Grounding",
    "NoCandidatesError",
    "ground",
    "filter_candidates",
    "sam_candidates",
    "candidates_from_masks",
    "embed_candidates",
    "emphasise",
    "pad_to_square",
    "text_features",
    "mix_scores",
    "rank_and_choose",
    "register",
]

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
    """

    text: str
    noun: str | None
    direction: str | None
    ordinal: int = 1
    direction_words: tuple[str, ...] = ()
    corrections: tuple[tuple[str, str], ...] = ()
    subject: str = ""

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


#: spaCy pipelines are not documented as thread-safe; the app calls parse() from worker threads.
_NLP_LOCK = threading.Lock()


def _nlp():
    """The shared spaCy pipeline (core.models.load_spacy, loaded once per process)."""
    from core.models import load_spacy

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


def parse(text: str) -> Expression:
    """Parse a referring expression into noun, direction and ordinal (see :class:`Expression`).

    Case, punctuation and a missing determiner do not matter; typos of direction words one
    edit away are fixed ("botom" -> "bottom"), multi-word phrases ("far left", "on the left
    side", "top right corner") and corner combinations ("upper left") are understood, and an
    ordinal ("second from the right") is read. "right hand", "standing up", "upside down" are
    not directions. Raises ValueError on a non-str or empty input.

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
    )


# --------------------------------------------------------------------------------------
# Choosing by direction
# --------------------------------------------------------------------------------------


def _check_boxes_scores(boxes, scores) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(boxes, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be an (N, 4) XYXY array, got shape {b.shape}")
    if s.shape != (b.shape[0],):
        raise ValueError(f"scores must be (N,) with N = {b.shape[0]} boxes, got shape {s.shape}")
    if b.shape[0] == 0:
        raise ValueError("no candidates to choose from (0 boxes)")
    if not (np.isfinite(b).all() and np.isfinite(s).all()):
        raise ValueError("boxes and scores must be finite numbers")
    if np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1]):
        raise ValueError("boxes must be XYXY with x2 >= x1 and y2 >= y1")
    return b, s


def _check_image_size(image_size) -> tuple[float, float] | None:
    if image_size is None:
        return None
    try:
        w, h = (float(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (width, height), got {image_size!r}") from None
    if not (w > 0 and h > 0 and np.isfinite(w) and np.isfinite(h)):
        raise ValueError(f"image_size must be two positive numbers (width, height), got {image_size!r}")
    return w, h


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _position_key(direction: str, boxes: np.ndarray, image_size) -> np.ndarray:
    """(N,) float: smaller means further towards ``direction`` (by box centre).

    Corner directions add the two axes, each normalised by the image size (or, without one,
    by the extent of the boxes). ``center``: distance to the image centre, or without an
    image size to the median of the box centres (the middle one of a row).
    """
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    if image_size is not None:
        width, height = image_size
    else:
        width = max(float(boxes[:, 2].max() - boxes[:, 0].min()), 1e-9)
        height = max(float(boxes[:, 3].max() - boxes[:, 1].min()), 1e-9)
    if direction == "center":
        if image_size is not None:
            ref_x, ref_y = width / 2.0, height / 2.0
        else:
            ref_x, ref_y = float(np.median(cx)), float(np.median(cy))
        return np.hypot((cx - ref_x) / width, (cy - ref_y) / height)
    x, y = cx / width, cy / height
    keys = {
        "left": x, "right": -x, "top": y, "bottom": -y,
        "top-left": x + y, "top-right": -x + y, "bottom-left": x - y, "bottom-right": -x - y,
    }
    return keys[direction]


def direction_order(direction: str, boxes, scores, image_size=None) -> np.ndarray:
    """Indices of ``boxes`` ordered from the ``direction`` side inwards (ties: higher score first).

    boxes: (N, 4) XYXY pixels; scores: (N,); image_size: (width, height) or None.
    Returns (N,) int64; element 0 is the box furthest towards ``direction``.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose one of {DIRECTIONS}")
    b, s = _check_boxes_scores(boxes, scores)
    key = _position_key(direction, b, _check_image_size(image_size))
    return np.lexsort((np.arange(len(b)), -s, key)).astype(np.int64)


def choose(direction, boxes, scores, top_k=3, image_size=None, ordinal=1) -> int:
    """Index of the candidate a referring expression points at.

    direction: one of :data:`DIRECTIONS` or None; boxes: (N, 4) float XYXY pixels;
    scores: (N,) higher is better; top_k: how many best-scored candidates the direction
    chooses among (None = all; raised to ``ordinal`` when smaller, so "third from the left"
    can be answered); image_size: (width, height) or None; ordinal: 1 = the furthest towards
    the direction, 2 = the next one, ... (clamped to the number of candidates considered).

    No direction: the best score. Otherwise the box centres are compared (see
    :func:`direction_order`); ties in position and in score go to the higher score, then the
    lower index. Returns an int index into the N candidates. Raises ValueError on bad input.
    """
    b, s = _check_boxes_scores(boxes, scores)
    ordinal = _positive_int(ordinal, "ordinal")
    size = _check_image_size(image_size)
    by_score = np.lexsort((np.arange(len(s)), -s))  # best first, ties by index
    if direction is None:
        return int(by_score[0])
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose one of {DIRECTIONS} or None")
    k = len(s) if top_k is None else max(_positive_int(top_k, "top_k"), ordinal)
    pool = by_score[:k]
    order = direction_order(direction, b[pool], s[pool], image_size=size)
    return int(pool[order[min(ordinal, len(pool)) - 1]])


# --------------------------------------------------------------------------------------
# Grounding: candidates, Global-Local CLIP scores, choice
# --------------------------------------------------------------------------------------

SCORINGS = ("local", "global", "mixed")
GLOBAL_EMPHASES = ("dim", "blur")


class NoCandidatesError(ValueError):
    """No candidate mask survived (SAM found nothing, or everything was tiny)."""


@dataclass(frozen=True)
class GroundingSettings:
    """Algorithm settings of :func:`ground` (each field switches one ablation row).

    scoring: "local" (object view vs. the noun prompt), "global" (whole image with the
        candidate emphasised vs. the whole sentence) or "mixed":
        ``score = global_weight * global + (1 - global_weight) * local``.
    global_weight: the mixing weight of the global score in "mixed" (0..1). Global-Local CLIP
        mixes *features* with 0.85 on the global side; we mix cosine *scores*, where both terms
        have the same scale, and default to an even 0.5.
    local_view: the object view for the local score, a :data:`core.views.VIEW_NAMES` name
        ("crop" or "mask" as in the paper; "mask_crop", "dim", "blur", "context" also work).
    global_emphasis: how the whole image emphasises the candidate: "dim" (the rest darkened
        to core.views.DIM_FACTOR) or "blur" (the rest Gaussian-blurred). The whole image is
        padded to a square first so CLIP's centre crop never cuts a candidate off.
    orientation: apply the direction rule (:func:`choose`) when the sentence has a direction;
        False ranks by score only (the paper's baseline row).
    top_k: how many best-scored candidates the direction chooses among (None = all).
    min_area_fraction: drop candidate masks smaller than this fraction of the image.
    duplicate_iou: drop a candidate whose mask IoU with a better-SAM-scored one exceeds this.
    max_candidates: keep at most this many candidates (best SAM score first; None = all).
    automask: keyword arguments for ``segmenter.everything`` (core.automask.AutoMaskSettings
        fields), e.g. ``{"points_per_side": 8, "pred_iou_thresh": 0.0}``.
    batch_size: CLIP image batch size.
    """

    scoring: str = "mixed"
    global_weight: float = 0.5
    local_view: str = "crop"
    global_emphasis: str = "dim"
    orientation: bool = True
    top_k: int | None = 3
    min_area_fraction: float = 0.0005
    duplicate_iou: float = 0.9
    max_candidates: int | None = 64
    automask: dict = field(default_factory=dict)
    batch_size: int = 32

    def __post_init__(self) -> None:
        from core.views import VIEW_NAMES

        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {self.scoring!r}")
        if not (isinstance(self.global_weight, (int, float)) and 0.0 <= self.global_weight <= 1.0):
            raise ValueError(f"global_weight must be a number in [0, 1], got {self.global_weight!r}")
        if self.local_view not in VIEW_NAMES:
            raise ValueError(f"local_view must be one of {VIEW_NAMES}, got {self.local_view!r}")
        if self.global_emphasis not in GLOBAL_EMPHASES:
            raise ValueError(f"global_emphasis must be one of {GLOBAL_EMPHASES}, got {self.global_emphasis!r}")
        if self.top_k is not None:
            _positive_int(self.top_k, "top_k")
        if self.max_candidates is not None:
            _positive_int(self.max_candidates, "max_candidates")
        if not 0.0 <= self.min_area_fraction < 1.0:
            raise ValueError(f"min_area_fraction must be in [0, 1), got {self.min_area_fraction!r}")
        if not 0.0 < self.duplicate_iou <= 1.0:
            raise ValueError(f"duplicate_iou must be in (0, 1], got {self.duplicate_iou!r}")
        if not isinstance(self.automask, dict):
            raise ValueError(f"automask must be a dict of AutoMaskSettings fields, got {type(self.automask).__name__}")
        _positive_int(self.batch_size, "batch_size")

    def with_(self, **changes) -> "GroundingSettings":
        """A copy with some fields changed (validated again)."""
        from dataclasses import replace

        return replace(self, **changes)


@dataclass
class CandidateFeatures:
    """CLIP image features of N candidate masks of one image (independent of the sentence).

    masks: (N, H, W) bool; boxes: (N, 4) float32 XYXY pixels; local: (N, D) float32 unit rows
    (object view); global_: (N, D) float32 unit rows (whole image, candidate emphasised).
    """

    masks: np.ndarray
    boxes: np.ndarray
    local: np.ndarray
    global_: np.ndarray


@dataclass
class Grounding:
    """The result of :func:`ground`: candidates ranked by score, and the one chosen.

    expression: the parsed sentence (noun, direction, ordinal).
    mask: (H, W) bool, the chosen candidate; box: (4,) float32 XYXY of it.
    chosen: index of the chosen candidate in the ranked arrays below (0 when the direction
        rule did not move away from the best score).
    masks: (N, H, W) bool candidates, best score first; boxes: (N, 4) float32 XYXY.
    scores: (N,) float32, the score they are ranked by (local, global or mixed per settings).
    local_scores / global_scores: (N,) float32 CLIP cosine similarities (NaN when given
        scores replaced CLIP).
    source_index: (N,) int64 index of each ranked candidate in the input / SAM candidate list.
    direction_applied: whether the direction rule chose (orientation on and a direction found).
    settings: the :class:`GroundingSettings` used.
    """

    expression: Expression
    mask: np.ndarray
    box: np.ndarray
    chosen: int
    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    local_scores: np.ndarray
    global_scores: np.ndarray
    source_index: np.ndarray
    direction_applied: bool
    settings: GroundingSettings

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def summary(self, top: int = 5) -> dict:
        """JSON-friendly explanation: the parse, the chosen candidate and the ``top`` best ones."""
        rows = []
        for i in range(min(top, len(self))):
            rows.append({
                "rank": i, "box": [round(float(v), 1) for v in self.boxes[i]],
                "score": float(self.scores[i]), "local": float(self.local_scores[i]),
                "global": float(self.global_scores[i]), "area": int(self.masks[i].sum()),
                "chosen": i == self.chosen,
            })
        return {
            "expression": self.expression.to_dict(),
            "chosen": self.chosen,
            "chosen_box": [round(float(v), 1) for v in self.box],
            "direction_applied": self.direction_applied,
            "n_candidates": len(self),
            "scoring": self.settings.scoring,
            "candidates": rows,
        }


def filter_candidates(masks, quality=None, *, min_area_fraction: float = 0.0005,
                      duplicate_iou: float = 0.9, max_candidates: int | None = None) -> np.ndarray:
    """Indices of the candidate masks to keep: not tiny, not a duplicate of a better one.

    masks: (N, H, W) bool; quality: (N,) higher is better (e.g. SAM's predicted IoU; None keeps
    the given order). Masks smaller than ``min_area_fraction`` of the image (or empty) go;
    then greedily, best quality first, a mask whose IoU with a kept mask exceeds
    ``duplicate_iou`` goes. Returns (M,) int64 indices, best quality first, at most
    ``max_candidates``.
    """
    m = np.asarray(masks)
    if m.ndim != 3 or m.dtype != bool:
        raise ValueError(f"masks must be (N, H, W) bool, got {m.shape} {m.dtype}")
    n, h, w = m.shape
    q = np.zeros(n) if quality is None else np.asarray(quality, dtype=np.float64)
    if q.shape != (n,):
        raise ValueError(f"quality must be (N,) = ({n},), got {q.shape}")
    flat = m.reshape(n, -1)
    areas = flat.sum(axis=1)
    big = np.flatnonzero((areas > 0) & (areas >= min_area_fraction * h * w))
    order = big[np.lexsort((big, -q[big]))]
    kept: list[int] = []
    for i in order:
        if kept:
            inter = (flat[kept] & flat[i]).sum(axis=1)
            union = areas[kept] + areas[i] - inter
            if np.any(inter / np.maximum(union, 1) > duplicate_iou):
                continue
        kept.append(int(i))
        if max_candidates is not None and len(kept) >= max_candidates:
            break
    return np.asarray(kept, dtype=np.int64)


def sam_candidates(segmenter, image: np.ndarray, settings: GroundingSettings) -> tuple[np.ndarray, np.ndarray]:
    """SAM automatic masks of ``image`` after :func:`filter_candidates`.

    Returns (masks (M, H, W) bool, sam_scores (M,) float32), best SAM score first.
    Raises :class:`NoCandidatesError` when none survive.
    """
    auto = segmenter.everything(segmenter.set_image(image), **settings.automask)
    if len(auto) == 0:
        raise NoCandidatesError(
            "SAM found no object masks in this image; lower automask pred_iou_thresh / "
            "stability_score_thresh (untrained SAM needs 0) or pass candidate masks")
    keep = filter_candidates(auto.masks, auto.scores, min_area_fraction=settings.min_area_fraction,
                             duplicate_iou=settings.duplicate_iou, max_candidates=settings.max_candidates)
    if len(keep) == 0:
        raise NoCandidatesError(
            f"all {len(auto)} SAM masks were smaller than min_area_fraction={settings.min_area_fraction}")
    return auto.masks[keep], auto.scores[keep].astype(np.float32)


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8: ``image`` centred on black, S = max(H, W) (so a centre crop loses nothing)."""
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.zeros((side, side, 3), dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = image
    return out


def emphasise(image: np.ndarray, mask: np.ndarray, how: str = "dim") -> np.ndarray:
    """The whole ``image`` (H, W, 3) uint8 with ``mask`` (H, W) bool emphasised: the rest dimmed
    (core.views.DIM_FACTOR) or blurred (radius core.views.BLUR_FRACTION of the longer side)."""
    from core import views

    if how == "dim":
        return views.dim_background(image, mask)
    if how == "blur":
        return views.blur_background(image, mask, max(2.0, views.BLUR_FRACTION * max(image.shape[:2])))
    raise ValueError(f"unknown emphasis {how!r}; choose one of {GLOBAL_EMPHASES}")


def embed_candidates(embedder, image: np.ndarray, masks: np.ndarray, *, local_view: str = "crop",
                     global_emphasis: str = "dim", batch_size: int = 32,
                     need_local: bool = True, need_global: bool = True) -> CandidateFeatures:
    """CLIP features of every candidate: its object view (local) and the emphasised whole image (global).

    image: (H, W, 3) uint8; masks: (N, H, W) bool. Features not needed are (N, 0) arrays.
    """
    from core.views import mask_to_box, render_view

    masks = np.asarray(masks, dtype=bool)
    n = len(masks)
    empty = np.zeros((n, 0), dtype=np.float32)
    local = (embedder.embed_images([render_view(local_view, image, m) for m in masks], batch_size=batch_size)
             if need_local else empty)
    global_ = (embedder.embed_images([pad_to_square(emphasise(image, m, global_emphasis)) for m in masks],
                                     batch_size=batch_size) if need_global else empty)
    boxes = np.stack([mask_to_box(m) for m in masks]).astype(np.float32)
    return CandidateFeatures(masks=masks, boxes=boxes, local=local, global_=global_)


def text_features(embedder, expression: Expression) -> tuple[np.ndarray, np.ndarray]:
    """(noun prompt (D,), whole sentence (D,)) CLIP text features, float32 unit vectors."""
    feats = embedder.embed_texts([expression.noun_prompt, expression.text.strip()])
    return feats[0], feats[1]


def mix_scores(local: np.ndarray, global_: np.ndarray, scoring: str, global_weight: float) -> np.ndarray:
    """The ranking score: local, global or ``global_weight * global + (1 - global_weight) * local``."""
    if scoring == "local":
        return np.asarray(local, dtype=np.float32)
    if scoring == "global":
        return np.asarray(global_, dtype=np.float32)
    if scoring == "mixed":
        return (global_weight * np.asarray(global_) + (1.0 - global_weight) * np.asarray(local)).astype(np.float32)
    raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")


def rank_and_choose(expression: Expression, masks, boxes, scores, local_scores, global_scores,
                    settings: GroundingSettings, image_size, source_index=None) -> Grounding:
    """Sort candidates by score (best first, stable) and apply :func:`choose`; a :class:`Grounding`."""
    scores = np.asarray(scores, dtype=np.float32)
    n = len(scores)
    src = np.arange(n, dtype=np.int64) if source_index is None else np.asarray(source_index, dtype=np.int64)
    order = np.lexsort((np.arange(n), -scores))
    masks, boxes = np.asarray(masks)[order], np.asarray(boxes, dtype=np.float32)[order]
    scores, src = scores[order], src[order]
    local_scores = np.asarray(local_scores, dtype=np.float32)[order]
    global_scores = np.asarray(global_scores, dtype=np.float32)[order]
    applied = bool(settings.orientation and expression.direction is not None)
    chosen = (choose(expression.direction, boxes, scores, top_k=settings.top_k, image_size=image_size,
                     ordinal=expression.ordinal) if applied else 0)
    return Grounding(expression=expression, mask=masks[chosen], box=boxes[chosen], chosen=int(chosen),
                     masks=masks, boxes=boxes, scores=scores, local_scores=local_scores,
                     global_scores=global_scores, source_index=src, direction_applied=applied,
                     settings=settings)


def candidates_from_masks(masks, image_shape) -> np.ndarray:
    """Validate candidate masks given by the caller: (N, H, W) bool matching ``image_shape[:2]``."""
    m = np.asarray(masks)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.dtype != bool:
        raise ValueError(f"candidate masks must be (N, H, W) bool, got {m.shape} {m.dtype}")
    if m.shape[1:] != tuple(image_shape[:2]):
        raise ValueError(f"candidate masks are {m.shape[1:]} but the image is {tuple(image_shape[:2])}")
    if len(m) == 0:
        raise NoCandidatesError("no candidate masks were given")
    empty = np.flatnonzero(~m.reshape(len(m), -1).any(axis=1))
    if len(empty):
        raise ValueError(f"candidate masks {empty.tolist()} are empty (no object pixels)")
    return m


def ground(segmenter, embedder, image, text, *, settings: GroundingSettings | None = None,
           candidate_masks=None, candidate_scores=None) -> Grounding:
    """Segment the object a referring expression names.

    segmenter: core.segment.Segmenter (unused when ``candidate_masks`` is given);
    embedder: core.embed.Embedder (unused when ``candidate_scores`` is given);
    image: (H, W, 3) uint8 RGB (anything core.images.load_image accepts is converted);
    text: the sentence, or an already parsed :class:`Expression`;
    settings: :class:`GroundingSettings` (defaults: mixed scoring, crop view, dim, top-3);
    candidate_masks: (N, H, W) bool to use instead of SAM's automatic masks (e.g. ground truth);
    candidate_scores: (N,) scores to rank the candidates by instead of CLIP (e.g. an oracle);
        needs ``candidate_masks``.

    Steps: parse -> candidates (SAM automatic masks, tiny and duplicate ones filtered) ->
    CLIP local score (object view vs. "a photo of a {noun}.") and global score (whole image
    with the candidate emphasised vs. the sentence) -> mixed per settings -> ranked ->
    :func:`choose` by direction. Returns a :class:`Grounding`. Raises ValueError on bad input
    and :class:`NoCandidatesError` (a ValueError) when there is nothing to choose from.
    """
    from core.images import load_image

    settings = settings or GroundingSettings()
    expression = text if isinstance(text, Expression) else parse(text)
    image = load_image(image)
    h, w = image.shape[:2]
    if candidate_scores is not None and candidate_masks is None:
        raise ValueError("candidate_scores needs candidate_masks (scores of which masks?)")
    if candidate_masks is not None:
        masks = candidates_from_masks(candidate_masks, image.shape)
    else:
        if segmenter is None:
            raise ValueError("ground() needs a segmenter, or candidate_masks")
        masks, _ = sam_candidates(segmenter, image, settings)
    if candidate_scores is not None:
        scores = np.asarray(candidate_scores, dtype=np.float32)
        if scores.shape != (len(masks),):
            raise ValueError(f"candidate_scores must be ({len(masks)},), got {scores.shape}")
        from core.views import mask_to_box

        boxes = np.stack([mask_to_box(m) for m in masks]).astype(np.float32)
        nan = np.full(len(masks), np.nan, dtype=np.float32)
        return rank_and_choose(expression, masks, boxes, scores, nan, nan, settings, (w, h))
    if embedder is None:
        raise ValueError("ground() needs an embedder, or candidate_scores")
    feats = embed_candidates(embedder, image, masks, local_view=settings.local_view,
                             global_emphasis=settings.global_emphasis, batch_size=settings.batch_size)
    noun_feat, sentence_feat = text_features(embedder, expression)
    local = feats.local @ noun_feat
    global_ = feats.global_ @ sentence_feat
    scores = mix_scores(local, global_, settings.scoring, settings.global_weight)
    return rank_and_choose(expression, masks, feats.boxes, scores, local, global_, settings, (w, h))


# --------------------------------------------------------------------------------------
# Command line: `python -m core parse TEXT`, `python -m core refer IMAGE TEXT`
# --------------------------------------------------------------------------------------


def run_parse(args) -> int:
    """`python -m core parse TEXT...`: one Expression as JSON per sentence (a list when several)."""
    records = [parse(text).to_dict() for text in args.text]
    print(json.dumps(records[0] if len(records) == 1 else records))
    return 0


def settings_from_args(args) -> GroundingSettings:
    """GroundingSettings from the `refer` / `evaluate refer` flags."""
    automask = {"points_per_side": args.points_per_side}
    if args.pred_iou_thresh is not None:
        automask["pred_iou_thresh"] = args.pred_iou_thresh
    if args.stability_thresh is not None:
        automask["stability_score_thresh"] = args.stability_thresh
    return GroundingSettings(
        scoring=getattr(args, "scoring", "mixed"), global_weight=args.global_weight,
        local_view=args.local_view, global_emphasis=args.global_emphasis,
        orientation=not getattr(args, "no_orientation", False),
        top_k=None if args.top_k == 0 else args.top_k, automask=automask,
        max_candidates=None if args.max_candidates == 0 else args.max_candidates)


def add_grounding_arguments(parser: argparse.ArgumentParser, *, ablation_flags: bool = True) -> None:
    """The grounding flags shared by `refer` and `evaluate refer`."""
    from core.views import VIEW_NAMES

    g = parser.add_argument_group("grounding")
    if ablation_flags:
        g.add_argument("--scoring", choices=SCORINGS, default="mixed", help="default: %(default)s")
        g.add_argument("--no-orientation", action="store_true", help="ignore direction words")
    g.add_argument("--global-weight", type=float, default=0.5,
                   help="weight of the global score in mixed scoring (default: %(default)s)")
    g.add_argument("--local-view", choices=VIEW_NAMES, default="crop", help="default: %(default)s")
    g.add_argument("--global-emphasis", choices=GLOBAL_EMPHASES, default="dim", help="default: %(default)s")
    g.add_argument("--top-k", type=int, default=3, help="candidates the direction chooses among (0 = all)")
    g.add_argument("--max-candidates", type=int, default=64, help="SAM candidates kept (0 = all)")
    g.add_argument("--points-per-side", type=int, default=16, help="SAM automatic mask grid")
    g.add_argument("--pred-iou-thresh", type=float, default=None,
                   help="SAM automatic mask IoU threshold (default 0.88; use 0 with --untrained)")
    g.add_argument("--stability-thresh", type=float, default=None,
                   help="SAM stability threshold (default 0.95; use 0 with --untrained)")


def run_refer(args) -> int:
    """`python -m core refer IMAGE TEXT`: ground a sentence; JSON summary on stdout, mask PNG in --out."""
    from pathlib import Path

    from core.cli import engine_from_args
    from core.images import load_image
    from core.masks import mask_to_png

    settings = settings_from_args(args)
    engine = engine_from_args(args)
    image = load_image(Path(args.image))
    result = ground(engine.segmenter, engine.embedder, image, args.text, settings=settings)
    summary = result.summary(top=args.show)
    summary["models"] = engine.label
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "mask.png").write_bytes(mask_to_png(result.mask))
        (out / "result.json").write_text(json.dumps(summary, indent=2))
        summary["mask_png"] = str(out / "mask.png")
        print(f"wrote {out / 'mask.png'} and {out / 'result.json'}", file=sys.stderr)
    print(json.dumps(summary))
    return 0


def register(subparsers) -> None:
    """Add `parse` and `refer` to `python -m core`."""
    p = subparsers.add_parser("parse", help="parse a referring expression (noun, direction, ordinal) as JSON",
                              description="Prints the parsed record of each sentence as JSON.")
    p.add_argument("text", nargs="+", help='a referring expression, e.g. "the second dog from the left"')
    p.set_defaults(func=run_parse)

    p = subparsers.add_parser("refer", help="segment the object a sentence names (SAM + CLIP + direction)",
                              description="Grounds TEXT in IMAGE; prints the parse, the chosen box and the "
                                          "top candidates as JSON; --out also writes mask.png.")
    p.add_argument("image")
    p.add_argument("text")
    p.add_argument("--out", help="folder for mask.png and result.json")
    p.add_argument("--show", type=int, default=5, help="candidates listed in the JSON (default: %(default)s)")
    add_grounding_arguments(p)
    from core.cli import add_model_arguments

    add_model_arguments(p)
    p.set_defaults(func=run_refer)
