"""The Python API: `Detector` and `Result` for inference, `train` / `resume` for training; prints nothing."""
