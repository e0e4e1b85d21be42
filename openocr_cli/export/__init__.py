"""Export: `run.py` is the entry (checkpoint -> ONNX or OpenVINO, with metadata and checks), `onnx_export.py` and
`openvino_export.py` write each format, `int8/` quantizes and guards the accuracy of the result.
"""
