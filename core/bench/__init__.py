"""Benchmarks: speed and memory of the engine's stages (`python -m core bench`).

- :mod:`core.bench.timing`: the one timer, the load average and the CPU description.
- :mod:`core.bench.sam`: SAM encoder / click / everything mode, fast path vs stock.
- :mod:`core.bench.run`: the other parts (embedding cache, CLIP, faiss, memory), the run
  and its table.

The library never imports this package; the command line (core/cli/bench.py) does.
"""
