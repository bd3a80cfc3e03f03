"""Referring expressions: parse a sentence, ground it in an image, choose by direction.

Orientation-aware zero-shot referring segmentation in three modules, each usable alone:

- :mod:`core.refer.parse`: "the second dog from the left" -> :class:`Expression`
  (noun ``dog``, direction ``left``, ordinal 2), with spaCy.
- :mod:`core.refer.ground`: candidates per image (SAM masks + CLIP Global-Local features:
  token masking and a mean-filled box crop, mixed as Global-Local CLIP publishes; or the
  score-mixing variant), then a choice per sentence; :func:`ground` runs both.
- :mod:`core.refer.choose`: the direction rule, among the ``top_k`` best-scored boxes.
"""
from core.refer.choose import choose, direction_order
from core.refer.ground import (
    GLOBAL_EMPHASES,
    LOCAL_FILLS,
    METHODS,
    SCORINGS,
    Candidates,
    Grounding,
    GroundingSettings,
    NoCandidatesError,
    TextFeatures,
    candidate_limit,
    choose_for_expression,
    cosine,
    emphasise,
    fill_colour,
    filter_candidates,
    global_local_scores,
    ground,
    image_candidates,
    local_view,
    mix_features,
    mix_scores,
    pad_to_square,
    rank_and_choose,
    sam_candidates,
    text_features,
)
from core.refer.parse import DIRECTIONS, MAX_EXPRESSION_CHARS, Expression, is_known_word, noun_phrase_of, parse

__all__ = [
    "DIRECTIONS", "MAX_EXPRESSION_CHARS", "Expression", "parse", "is_known_word", "noun_phrase_of", "choose", "direction_order",
    "METHODS", "SCORINGS", "GLOBAL_EMPHASES", "LOCAL_FILLS", "GroundingSettings", "Candidates", "TextFeatures",
    "Grounding", "NoCandidatesError", "ground", "image_candidates", "choose_for_expression", "text_features",
    "filter_candidates", "candidate_limit", "sam_candidates", "local_view", "fill_colour", "emphasise",
    "pad_to_square", "mix_features", "cosine", "global_local_scores", "mix_scores", "rank_and_choose",
]
