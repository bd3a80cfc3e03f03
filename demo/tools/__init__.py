"""Tools that drive the app from outside (browser benchmark, load test, in-process
measurements). The UI never imports them; tests/test_layers.py checks it."""
