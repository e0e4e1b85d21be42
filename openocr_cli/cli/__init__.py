"""The command line: the console script (`entry.py`), the Typer app (`app.py`), console output (`ui.py`), the
training display, the options shared by commands (`options.py`) and one module per command in `cli/commands/`.

The only package that prints, and the only one that imports rich or typer.
"""
