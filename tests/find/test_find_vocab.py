"""core.find.vocab: COCO-panoptic's categories, a person's words, limits."""
from __future__ import annotations

import pytest

from core.find.vocab import MAX_WORDS, Category, coco_panoptic, from_words, parse_vocabulary, prompt


def test_coco_panoptic_has_133_categories_and_cocos_thing_ids(coco_json):
    vocab = coco_panoptic()
    assert len(vocab) == 133 and sum(c.isthing for c in vocab) == 80 and len({c.id for c in vocab}) == 133
    things = {c.id: c.name for c in vocab if c.isthing}
    assert things == {c["id"]: c["name"] for c in coco_json["categories"]}


def test_names_become_words():
    assert Category(1, "wall-other-merged", False).words == "wall"
    assert Category(1, "wall-brick", False).words == "brick wall"
    assert prompt(Category(1, "sky-other-merged", False)) == "a photo of a sky."


def test_a_persons_words(tmp_path):
    assert [c.name for c in parse_vocabulary("cat, Dog,  sofa, cat")] == ["cat", "dog", "sofa"]
    path = tmp_path / "words.txt"
    path.write_text("lamp\nrug, plant\n")
    assert [c.name for c in parse_vocabulary(str(path))] == ["lamp", "rug", "plant"]
    assert len(parse_vocabulary("coco-panoptic")) == len(parse_vocabulary(None)) == 133


def test_a_sentence_gives_its_nouns():
    assert [c.name for c in parse_vocabulary("two dogs sleep on a sofa")] == ["dog", "sofa"]


@pytest.mark.parametrize("spec, message", [
    (",", "empty"), (", ".join(f"w{i}" for i in range(MAX_WORDS + 1)), "limit"),
    ("/nonexistent/words.txt", "cannot read"), ("x" * 70 + ", y", "longer than")])
def test_bad_vocabularies_say_why(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_vocabulary(spec)


def test_from_words_numbers_from_one():
    assert [c.id for c in from_words(["a", "b"])] == [1, 2]


def test_text_features_are_computed_once_per_prompt():
    import numpy as np

    from core.find.vocab import TextFeatureCache

    asked = []

    class Counting:
        def embed_texts(self, texts):
            asked.append(list(texts))
            return np.eye(8, dtype=np.float32)[[len(t) % 8 for t in texts]]

    cache, clip = TextFeatureCache(), Counting()
    first = cache.features(clip, ("a", "bb", "ccc"))
    again = cache.features(clip, ("bb", "dddd", "a"))
    assert asked == [["a", "bb", "ccc"], ["dddd"]]
    np.testing.assert_array_equal(again[0], first[1])
    small = TextFeatureCache(size=2)
    assert small.features(clip, ("a", "bb", "ccc")).shape == (3, 8)     # more than it keeps: still answered
