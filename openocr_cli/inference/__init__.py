"""Inference: from a model argument and options to polygons.

`resolve.py` turns options into settings (each with its source), `predictor.py` runs pre-processing, a backend
and post-processing on images, `tiling.py` cuts huge images, `results.py` holds what comes out, `run_folder.py`
writes a predict run to disk and `devices.py` spreads one over several devices. Imports neither training nor export.
"""
