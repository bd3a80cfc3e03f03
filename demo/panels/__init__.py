"""One module per panel of the app: its callbacks (plain values in and out, no gradio) and
its widgets and wiring (`build` / `wire`). The shell (`demo/shell.py`) composes them."""
