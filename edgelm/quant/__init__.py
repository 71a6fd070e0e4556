"""Quantization: ONNX (onnxruntime.quantization) and torch-side for ExecuTorch; see edgelm/stages/quantize.py."""
