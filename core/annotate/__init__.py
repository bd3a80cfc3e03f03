"""Finishing objects: the object list of an image (objects.py), undo / redo (history.py), brush
and eraser strokes (strokes.py), class suggestions (suggest.py) and per-image exports
(exports.py). Plain records and short functions; no UI imports."""
