"""Inference: from a model argument and options to polygons.

`options.py` declares every inference option once (the Detector keywords and the commands' flags), `resolve.py`
turns options into settings (each with its source, from the named layers of `layers.py`), `predictor.py` runs
pre-processing, a backend and post-processing on images, `tiling.py` cuts huge images, `results.py` holds what
comes out, `run_folder.py` writes a predict run to disk and `devices.py` spreads one over several devices.
Imports neither training nor export.
"""
