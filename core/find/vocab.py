"""Vocabularies for labelling and for deciding what a phrase is not.

A `Vocabulary` is a tuple of `Category` (id, name, isthing). The default is COCO-panoptic's
133 categories (80 things with COCO's ids, 53 stuff); a person's own words come as a comma
list, a file (one name per line or comma separated), or the nouns spaCy finds in a sentence.
Text prompts are made from the names ("wall-other-merged" -> "a photo of a wall"); their
CLIP features are computed once per (embedder, vocabulary) and cached.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.models import load_spacy

#: Longest vocabulary accepted (each name costs one CLIP text pass, once).
MAX_WORDS = 1000
#: Longest name, in characters.
MAX_NAME_CHARS = 60
#: Prompts standing for "none of the named things" when a phrase is decided against others.
BACKGROUND_PROMPTS = ("background", "a wall", "the floor", "the ground", "the sky", "a surface", "texture")

_THINGS = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"),
    (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"),
    (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"),
    (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"),
    (67, "dining table"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"),
    (76, "keyboard"), (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
    (89, "hair drier"), (90, "toothbrush"))
_STUFF = (
    (92, "banner"), (93, "blanket"), (95, "bridge"), (100, "cardboard"), (107, "counter"), (109, "curtain"),
    (112, "door-stuff"), (118, "floor-wood"), (119, "flower"), (122, "fruit"), (125, "gravel"), (128, "house"),
    (130, "light"), (133, "mirror-stuff"), (138, "net"), (141, "pillow"), (144, "platform"),
    (145, "playingfield"), (147, "railroad"), (148, "river"), (149, "road"), (151, "roof"), (154, "sand"),
    (155, "sea"), (156, "shelf"), (159, "snow"), (161, "stairs"), (166, "tent"), (168, "towel"),
    (171, "wall-brick"), (175, "wall-stone"), (176, "wall-tile"), (177, "wall-wood"), (178, "water-other"),
    (180, "window-blind"), (181, "window-other"), (184, "tree-merged"), (185, "fence-merged"),
    (186, "ceiling-merged"), (187, "sky-other-merged"), (188, "cabinet-merged"), (189, "table-merged"),
    (190, "floor-other-merged"), (191, "pavement-merged"), (192, "mountain-merged"), (193, "grass-merged"),
    (194, "dirt-merged"), (195, "paper-merged"), (196, "food-other-merged"), (197, "building-other-merged"),
    (198, "rock-merged"), (199, "wall-other-merged"), (200, "rug-merged"))


@dataclass(frozen=True)
class Category:
    """One label: COCO-style id (>= 1), name, and whether it counts instances (thing) or not (stuff)."""

    id: int
    name: str
    isthing: bool = True

    @property
    def words(self) -> str:
        """The name as words: "wall-other-merged" -> "wall", "wall-brick" -> "brick wall"."""
        base = re.sub(r"-(merged|other|stuff)\b", "", self.name)
        parts = base.split("-")
        return " ".join(reversed(parts)) if len(parts) == 2 else base.replace("-", " ")


Vocabulary = tuple[Category, ...]


def coco_panoptic() -> Vocabulary:
    """COCO-panoptic's 133 categories: 80 things (COCO ids 1-90), 53 stuff (ids 92-200)."""
    return (tuple(Category(i, n, True) for i, n in _THINGS) + tuple(Category(i, n, False) for i, n in _STUFF))


def from_words(words, *, isthing: bool = True) -> Vocabulary:
    """A vocabulary of the given names (ids 1..N in order, duplicates dropped); ValueError when
    empty, too long or a name is too long."""
    names = list(dict.fromkeys(w.strip().lower() for w in words if w and w.strip()))
    if not names:
        raise ValueError("the vocabulary is empty: give at least one word")
    if len(names) > MAX_WORDS:
        raise ValueError(f"the vocabulary has {len(names)} words; the limit is {MAX_WORDS}")
    long = [n for n in names if len(n) > MAX_NAME_CHARS]
    if long:
        raise ValueError(f"the word {long[0][:30]!r}... is longer than {MAX_NAME_CHARS} characters")
    return tuple(Category(i + 1, n, isthing) for i, n in enumerate(names))


def nouns_of(sentence: str) -> list[str]:
    """The nouns spaCy finds in a sentence, lemmatised ("dogs on a sofa" -> ["dog", "sofa"])."""
    doc = load_spacy()(sentence)
    return [t.lemma_.lower() for t in doc if t.pos_ in ("NOUN", "PROPN")]


def parse_vocabulary(spec: str | None) -> Vocabulary:
    """"coco-panoptic" (or None/""), a path to a text file, a comma list ("cat, dog, sofa"),
    or a sentence (its nouns). ValueError with the reason when it cannot be used."""
    spec = (spec or "").strip()
    if not spec or spec.lower() in ("coco-panoptic", "coco_panoptic", "coco"):
        return coco_panoptic()
    if len(spec) < 4096 and ("/" in spec or spec.endswith(".txt")) and "," not in spec:
        return from_words(_read_words(Path(spec)))
    if "," in spec:
        return from_words(spec.split(","))
    words = nouns_of(spec) if " " in spec else [spec]
    if not words:
        raise ValueError(f"no nouns found in {spec[:60]!r}: give a comma list of words")
    return from_words(words)


def _read_words(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the vocabulary file {path}: {exc.__class__.__name__}") from exc
    return [w for line in text.splitlines() for w in line.split(",")]


def prompt(category: Category) -> str:
    """The CLIP text prompt of a category."""
    return f"a photo of a {category.words}."


class TextFeatureCache:
    """Unit CLIP text features per (embedder, prompt), computed once: a list of prompts costs
    only its new ones (in one batch). Thread-safe; at most `size` prompts kept (oldest go)."""

    def __init__(self, size: int = 8192):
        self.size = size
        self._entries: dict[tuple[int, str], np.ndarray] = {}
        self._lock = threading.Lock()

    def features(self, embedder, prompts: tuple[str, ...]) -> np.ndarray:
        """(N, D) features of `prompts`, in order."""
        with self._lock:
            missing = [p for p in dict.fromkeys(prompts) if (id(embedder), p) not in self._entries]
        if missing:
            computed = embedder.embed_texts(missing)
            with self._lock:
                for p, v in zip(missing, computed):
                    self._entries[(id(embedder), p)] = v
                while len(self._entries) > self.size:
                    self._entries.pop(next(iter(self._entries)))
        with self._lock:
            found = [self._entries.get((id(embedder), p)) for p in prompts]
        if any(v is None for v in found):           # evicted meanwhile: compute those again
            return embedder.embed_texts(list(prompts))
        return np.stack(found)


#: One per process: a prompt's features are 512 floats; COCO-panoptic's 133 take 270 KB.
TEXT_FEATURES = TextFeatureCache()
