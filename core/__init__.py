"""Engine for finding and selecting objects in images: SAM segmentation, object views,
CLIP embeddings, a faiss object gallery and referring expressions.

This package never imports gradio. Heavy libraries (torch, open_clip, faiss, spaCy) are
imported by the modules that need them, so `import core` stays cheap.
"""

__version__ = "0.1.0"
