"""Referring expressions: parse a sentence, ground it in an image, choose by direction.

Orientation-aware zero-shot referring segmentation in three modules, each usable alone:

- :mod:`core.refer.parse`: "the second dog from the left" -> :class:`Expression`
  (noun ``dog``, direction ``left``, ordinal 2), with spaCy.
- :mod:`core.refer.ground`: candidates per image (SAM masks + CLIP Global-Local features),
  then a choice per sentence; :func:`ground` runs both.
- :mod:`core.refer.choose`: the direction rule, among the ``top_k`` best-scored boxes.
"""
from core.refer.choose import choose, direction_order
from core.refer.ground import (
    GLOBAL_EMPHASES,
    SCORINGS,
    Candidates,
    Grounding,
    GroundingSettings,
    NoCandidatesError,
    choose_for_expression,
    emphasise,
    filter_candidates,
    ground,
    image_candidates,
    mix_scores,
    pad_to_square,
    rank_and_choose,
    sam_candidates,
    text_features,
)
from core.refer.parse import DIRECTIONS, Expression, parse

__all__ = [
    "DIRECTIONS", "Expression", "parse", "choose", "direction_order", "SCORINGS", "GLOBAL_EMPHASES",
    "GroundingSettings", "Candidates", "Grounding", "NoCandidatesError", "ground", "image_candidates",
    "choose_for_expression", "text_features", "filter_candidates", "sam_candidates", "emphasise",
    "pad_to_square", "mix_scores", "rank_and_choose",
]
