"""Forward passes behind one interface: torch (`torch_backend.py`), onnxruntime (`onnx_backend.py`) and OpenVINO
(`openvino_backend.py`); what a graph file declares about itself (`graph_checks.py`, `onnx_metadata.py`).
"""
