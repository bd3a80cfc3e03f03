"""`python -m core`: the command line over the library (entry point: core.cli.main.main).

- :mod:`core.cli.args`: options shared by the commands and app.py, and the one function that
  turns parsed arguments into `EngineSettings`;
- :mod:`core.cli.commands`: segment, index, search, fetch-weights;
- :mod:`core.cli.refer`: parse, refer; :mod:`core.cli.evaluate`: evaluate retrieval | refer;
- :mod:`core.cli.bench`: bench.

The library never imports this package.
"""
