"""What `eval` adds to precision/recall/hmean: error records and reports, recall by text height, resize-limit
sweeps, and post-processing settings tuned on the cached probability maps of one model pass."""
