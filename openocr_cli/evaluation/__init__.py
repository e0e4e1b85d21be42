"""Evaluation: `evaluator.py` runs a model over a labelled set and scores it with the IoU metric (`iou_metric.py`);
the rest is what `eval` adds to precision/recall/hmean: error records and reports, recall by text height,
resize-limit sweeps, post-processing tuned on cached probability maps, uncertainty ranking and speed rows.
"""
