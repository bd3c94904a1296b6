"""Deployment: ONNX export (``export``), the exporter/pass contract (``schema``), onnxruntime inference and parity
(``runtime``) and the naive-vs-fused latency comparison (``benchmark``).

Imports nothing on its own: ``schema`` is shared with ``passes.onnx`` and must stay importable without ``export``.
"""
