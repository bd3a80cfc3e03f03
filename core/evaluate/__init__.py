"""Evaluations of the engine against annotated data (`python -m core evaluate ...`).

- :mod:`core.evaluate.metrics`: Precision@K, Recall@K, AP and friends (pure numpy).
- :mod:`core.evaluate.retrieval`: the object-retrieval protocol on COCO-format data.
- :mod:`core.evaluate.refer_data`: referring-expression data (RefCOCO files, JSON lines, synthetic).
- :mod:`core.evaluate.refer`: oIoU / mIoU of the grounding pipeline per ablation row.

The library never imports this package; the command line (core/cli/evaluate.py) does.
"""

#: The SAM the evaluations default to: the papers' model, so rows stay comparable (the app's
#: and the other commands' default depends on the device; pass --sam to evaluate another).
PAPER_SAM = "vit_b"
