"""Graph passes: ``fx`` analyses and rewrites the PyTorch model; ``onnx`` rewrites the exported graph."""
