"""Exporters: the whole detector (feature extractor and scorer) as ONNX, OpenVINO IR or a
TensorRT engine, in FP32, FP16 or INT8, parity-checked against PyTorch and packed as a bundle."""
