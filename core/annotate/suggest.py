"""Class suggestions for a new object, learnt from the objects the person already named.

Two sources, each a probability over the candidate classes (the class list plus any class the
person used):

- **yours** (k-NN): a faiss IndexFlatIP over unit CLIP features of the named objects' views
  (`NamedIndex`, growing as the person names objects). The k nearest vote for their class,
  each vote weighted by its cosine similarity (negative similarities count 0); votes sum to 1.
- **clip** (text): CLIP's softmax, at CLIP's temperature, of the object's feature against the
  prompts of the classes ("a photo of a dog."), as label-everything does (core/find).

**Merge rule.** With n_c named examples of class c, the person's weight for c is
alpha_c = n_c / (n_c + n0) (n0 = 2: one example -> 1/3, two -> 1/2, five -> 0.71, ten -> 0.83):

    score(c) = alpha_c * knn(c) + (1 - alpha_c) * text(c)

then scores are normalised to sum 1 and the top 3 are suggested. A class nobody has named keeps
CLIP's full say; a class with a handful of examples is decided mostly by the person's own
objects (it rises when they look alike, and falls when none of them does). Each suggestion's
source is the larger of its two terms ("yours" or "clip").

    suggester = Suggester(dim=512)
    suggester.name(("a.jpg", 3), feature, "dog")                   # when an object is kept
    text = class_text_features(embedder, classes)                  # (V, D), cached per prompt
    suggester.suggest(feature, classes, text)                      # -> [Suggestion x 3]

Latency after the mask is ready: `python -m core.bench.suggest` (one view render, one CLIP
image pass, one faiss search, the merge).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import faiss
import numpy as np

from core.find.instances import softmax_rows
from core.find.vocab import TEXT_FEATURES, Category, prompt
from core.views import render_view

SOURCES = ("merged", "knn", "text")
DEFAULT_VIEW = "mask_crop"


@dataclass(frozen=True)
class Suggestion:
    """One suggested class: category; score (merged, 0..1, the suggestions of an object sum to
    at most 1); source "yours" (the k-NN term is larger) or "clip"; knn and text: the two terms
    before weighting; examples: how many objects of this class the person has named."""

    category: str
    score: float
    source: str
    knn: float
    text: float
    examples: int


def unit(feature: np.ndarray) -> np.ndarray:
    """(D,) or (N, D) features scaled to unit length, float32 (zero rows stay zero)."""
    x = np.asarray(feature, np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


class NamedIndex:
    """The person's named objects: keys (e.g. (file_name, object id)), unit features (N, D)
    float32 in a faiss IndexFlatIP, and their class names. At most `max_items` (oldest go)."""

    def __init__(self, dim: int, max_items: int = 20_000):
        self.dim, self.max_items = int(dim), int(max_items)
        self._keys: list[Hashable] = []
        self._labels: list[str] = []
        self._features = np.zeros((0, self.dim), np.float32)
        self._index = faiss.IndexFlatIP(self.dim)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def nbytes(self) -> int:
        """Bytes held (features twice: our copy and faiss's, plus labels), for the session budget."""
        return 2 * self._features.nbytes + sum(len(s) + 64 for s in self._labels)

    def counts(self) -> dict[str, int]:
        """Named examples per class."""
        out: dict[str, int] = {}
        for label in self._labels:
            out[label] = out.get(label, 0) + 1
        return out

    def name(self, key: Hashable, feature: np.ndarray, category: str) -> None:
        """Add (or replace) the named object `key` with its (D,) feature and class."""
        feature = unit(np.reshape(feature, (1, -1)))
        if feature.shape[1] != self.dim:
            raise ValueError(f"a feature of {feature.shape[1]} values on a {self.dim}-d index")
        if key in self._keys:
            self.forget(key)
        self._keys.append(key)
        self._labels.append(str(category))
        self._features = np.concatenate([self._features, feature])
        self._index.add(feature)
        if len(self._keys) > self.max_items:
            self.forget(self._keys[0])

    def relabel(self, key: Hashable, category: str) -> None:
        """A named object got a new class (its feature stays)."""
        if key in self._keys:
            self._labels[self._keys.index(key)] = str(category)

    def forget(self, key: Hashable) -> None:
        """Drop a named object (deleted, or replaced); no error when it is not there."""
        if key not in self._keys:
            return
        i = self._keys.index(key)
        del self._keys[i], self._labels[i]
        self._features = np.delete(self._features, i, axis=0)
        self._index.reset()
        self._index.add(self._features)

    def votes(self, feature: np.ndarray, k: int = 10) -> dict[str, float]:
        """k-NN vote of a (D,) feature: class -> similarity-weighted share (sums to 1; {} when
        the index is empty or no neighbour is similar)."""
        if not self._keys:
            return {}
        sims, idx = self._index.search(unit(np.reshape(feature, (1, -1))), min(k, len(self._keys)))
        weights: dict[str, float] = {}
        for s, i in zip(sims[0], idx[0]):
            if i >= 0 and s > 0:
                weights[self._labels[i]] = weights.get(self._labels[i], 0.0) + float(s)
        total = sum(weights.values())
        return {c: w / total for c, w in weights.items()} if total > 0 else {}


def class_text_features(embedder, classes: Sequence[str]) -> np.ndarray:
    """(V, D) unit CLIP text features of the classes' prompts (cached per prompt)."""
    prompts = tuple(prompt(Category(i + 1, str(c))) for i, c in enumerate(classes))
    return TEXT_FEATURES.features(embedder, prompts)


def text_probabilities(feature: np.ndarray, text_features: np.ndarray, temperature: float = 100.0) -> np.ndarray:
    """(V,) CLIP softmax of a (D,) unit feature against (V, D) unit text features."""
    logits = temperature * (unit(np.reshape(feature, (1, -1))) @ np.asarray(text_features, np.float32).T)
    return softmax_rows(logits)[0]


def object_feature(embedder, image: np.ndarray, mask: np.ndarray, view: str = DEFAULT_VIEW) -> np.ndarray:
    """(D,) unit CLIP feature of an object's view. image (H, W, 3) uint8 RGB; mask (H, W) bool."""
    return unit(embedder.embed_images([render_view(view, image, mask)])[0])


def person_weight(examples: int, n0: float = 2.0) -> float:
    """alpha = n / (n + n0): the weight of the person's own examples for a class with n of them."""
    return examples / (examples + n0) if examples > 0 else 0.0


class Suggester:
    """A session's suggestion state: the named-object index and the merge settings. k: the
    neighbours that vote; n0: examples at which the person's weight reaches one half;
    temperature: CLIP's logit scale for the text term."""

    def __init__(self, dim: int, *, k: int = 10, n0: float = 2.0, temperature: float = 100.0,
                 max_items: int = 20_000):
        self.index = NamedIndex(dim, max_items)
        self.k, self.n0, self.temperature = int(k), float(n0), float(temperature)

    @property
    def nbytes(self) -> int:
        return self.index.nbytes

    def name(self, key: Hashable, feature: np.ndarray, category: str) -> None:
        """Learn from a named object (call when an object is kept or renamed)."""
        self.index.name(key, feature, category)

    def candidates(self, classes: Sequence[str]) -> list[str]:
        """The class list followed by classes only the person used, without duplicates."""
        return list(dict.fromkeys([*map(str, classes), *self.index.counts()]))

    def scores(self, feature: np.ndarray, classes: Sequence[str], text_features: np.ndarray | None,
               source: str = "merged") -> list[Suggestion]:
        """Every candidate class scored and sorted best first. text_features: (V, D) for
        `self.candidates(classes)` (None: no text term). source: "merged", "knn" or "text"."""
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
        names = self.candidates(classes)
        if text_features is not None and len(text_features) != len(names):
            raise ValueError(f"{len(text_features)} text features for {len(names)} classes")
        knn = self.index.votes(feature, self.k)
        text = (text_probabilities(feature, text_features, self.temperature) if text_features is not None
                else np.zeros(len(names), np.float32))
        counts = self.index.counts()
        rows = []
        for c, t in zip(names, text.tolist()):
            n, v = counts.get(c, 0), knn.get(c, 0.0)
            a = {"merged": person_weight(n, self.n0), "knn": 1.0, "text": 0.0}[source]
            rows.append((c, a * v + (1 - a) * t, "yours" if a * v > (1 - a) * t else "clip", v, t, n))
        total = sum(r[1] for r in rows) or 1.0
        out = [Suggestion(c, s / total, src, v, t, n) for c, s, src, v, t, n in rows]
        return sorted(out, key=lambda s: (-s.score, names.index(s.category)))

    def suggest(self, feature: np.ndarray, classes: Sequence[str], text_features: np.ndarray | None,
                top: int = 3, source: str = "merged") -> list[Suggestion]:
        """The `top` best-scored classes (ties in class-list order)."""
        return self.scores(feature, classes, text_features, source)[:top]

    def suggest_for(self, embedder, image: np.ndarray, mask: np.ndarray, classes: Sequence[str],
                    top: int = 3, view: str = DEFAULT_VIEW) -> tuple[np.ndarray, list[Suggestion]]:
        """From a ready mask: (the object's (D,) feature, to name it later; its suggestions)."""
        feature = object_feature(embedder, image, mask, view)
        text = class_text_features(embedder, self.candidates(classes))
        return feature, self.suggest(feature, classes, text, top)
