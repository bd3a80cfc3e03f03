"""The Gradio app on top of `core`: layout, callbacks, rendering, per-session state.

Imports only core, numpy, PIL and gradio (no torch, faiss, spaCy, open_clip or
segment_anything). `build_demo(AppContext(...))` returns the Blocks; app.py launches it.
"""
