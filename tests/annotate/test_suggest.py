"""core.annotate.suggest: the named-object index, CLIP's text term and the merge rule."""
import numpy as np
import pytest

from core.annotate.suggest import NamedIndex, Suggester, person_weight, text_probabilities, unit

D = 16
CLASSES = ["cat", "dog", "car", "tree"]


def _class_vectors(seed=0):
    return unit(np.random.default_rng(seed).normal(size=(len(CLASSES), D)))


def _near(v, rng, noise=0.1):
    return unit(v + noise * rng.normal(size=v.shape))


def test_knn_vote_is_similarity_weighted_and_sums_to_one():
    index = NamedIndex(D)
    proto = _class_vectors()
    rng = np.random.default_rng(1)
    for i in range(6):
        index.name(("a", i), _near(proto[i % 2], rng), CLASSES[i % 2])
    votes = index.votes(proto[1], k=4)
    assert max(votes, key=votes.get) == "dog" and abs(sum(votes.values()) - 1) < 1e-6
    assert index.counts() == {"cat": 3, "dog": 3} and index.nbytes > 6 * D * 4
    index.relabel(("a", 1), "wolf")
    index.forget(("a", 0))
    assert index.counts() == {"cat": 2, "wolf": 1, "dog": 2} and len(index) == 5
    assert NamedIndex(D).votes(proto[0]) == {}
    with pytest.raises(ValueError, match="8 values on a 16-d"):
        index.name("x", np.ones(8), "cat")


def test_without_examples_the_text_term_decides_and_says_so():
    proto = _class_vectors()
    s = Suggester(D)
    top = s.suggest(proto[2], CLASSES, proto)          # text features == class vectors: CLIP "knows"
    assert [t.category for t in top][0] == "car" and top[0].source == "clip" and len(top) == 3
    assert abs(sum(x.score for x in s.scores(proto[2], CLASSES, proto)) - 1) < 1e-5


def test_after_a_handful_of_examples_suggestions_come_from_the_persons_objects():
    """CLIP's text term is wrong on purpose (rotated class vectors); the person's examples fix it."""
    proto = _class_vectors()
    wrong_text = np.roll(proto, 1, axis=0)             # CLIP would say "dog" for a cat, ...
    rng = np.random.default_rng(2)
    s = Suggester(D)
    assert s.suggest(proto[0], CLASSES, wrong_text)[0].category == "dog"
    for i in range(5 * len(CLASSES)):
        c = i % len(CLASSES)
        s.name(i, _near(proto[c], rng), CLASSES[c])
    for c, name in enumerate(CLASSES):
        top = s.suggest(_near(proto[c], rng), CLASSES, wrong_text)
        assert top[0].category == name and top[0].source == "yours" and top[0].examples == 5
    assert person_weight(5) > 0.7 and person_weight(0) == 0 and person_weight(2) == 0.5


def test_sources_alone_and_person_only_classes():
    proto = _class_vectors()
    s = Suggester(D)
    s.name("k", proto[3], "oak")                       # a class only the person used
    assert s.candidates(CLASSES) == [*CLASSES, "oak"]
    text = np.concatenate([proto, proto[3:4]])
    assert s.suggest(proto[3], CLASSES, text, source="knn")[0].category == "oak"
    assert [x.category for x in s.suggest(proto[3], CLASSES, None, source="knn")] == ["oak", "cat", "dog"]
    assert s.suggest(proto[0], CLASSES, text, source="text")[0].category == "cat"
    with pytest.raises(ValueError, match="source must be"):
        s.suggest(proto[0], CLASSES, text, source="both")
    with pytest.raises(ValueError, match="4 text features for 5 classes"):
        s.suggest(proto[0], CLASSES, proto)


def test_text_probabilities_are_a_softmax():
    proto = _class_vectors()
    p = text_probabilities(proto[1], proto)
    assert p.shape == (4,) and abs(p.sum() - 1) < 1e-5 and p.argmax() == 1


def test_suggest_for_with_the_untrained_embedder(embedder):
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    mask = np.zeros((64, 80), bool)
    mask[10:40, 20:60] = True
    s = Suggester(embedder.dim)
    feature, top = s.suggest_for(embedder, image, mask, CLASSES)
    assert feature.shape == (embedder.dim,) and abs(np.linalg.norm(feature) - 1) < 1e-4
    assert len(top) == 3 and all(t.category in CLASSES for t in top)
    s.name(("img", 1), feature, "dog")
    _, top = s.suggest_for(embedder, image, mask, CLASSES)
    dog = next(t for t in top if t.category == "dog")       # one example: weight 1/3, k-NN vote 1
    assert dog.knn == 1.0 and dog.examples == 1 and dog.score >= 0.25 - 1e-6  # >= (1/3) / (4/3): always in the top 3 of 4
