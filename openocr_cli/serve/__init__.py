"""`openocr-det serve`: the Detector behind HTTP (FastAPI + uvicorn), micro-batched, bounded, hostile-input safe.

Needs the `serve` extra (fastapi, uvicorn, python-multipart, prometheus-client); the ONNX and OpenVINO paths
stay torch-free. Nothing here prints: the command layer (cli/commands/serve.py) does.
"""
