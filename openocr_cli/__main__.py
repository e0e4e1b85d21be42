"""`python -m openocr_cli` runs the same CLI as the `openocr-det` script (torchrun needs a module)."""

from openocr_cli.cli.entry import run

if __name__ == "__main__":
    run()
