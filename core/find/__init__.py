"""Find all, label everything: every instance of a word or of an example, and semantic /
instance / panoptic maps with an open vocabulary, from SAM's automatic masks + CLIP.

- :mod:`core.find.vocab`: vocabularies (COCO-panoptic's 133 categories, the person's own
  words), their text features cached per embedder.
- :mod:`core.find.instances`: ``find_all`` (a phrase), ``find_like`` (an example object).
- :mod:`core.find.labels`: a label per candidate, then the semantic, instance and panoptic
  outputs and their COCO-format exports.
All of them read one image's candidates (masks + CLIP features) from ``core.analysis``.
"""
