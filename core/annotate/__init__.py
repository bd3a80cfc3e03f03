"""Correcting and naming objects: brush/eraser strokes, object lists, history, suggestions."""
