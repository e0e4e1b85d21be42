"""Data: label files (`labels.py`), image reading and listing, training samples (`dataset.py`, `augment.py`,
`targets.py`), the eval/predict resize (`resize.py`), PDFs, the decode cache and the synthetic set (`synth.py`).
"""
