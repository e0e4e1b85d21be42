"""int8: `export.py` drives calibration (`quantize.py`), the accuracy guard (`guard.py`) and the search for
layers to keep in float (`search.py`).
"""
