"""Compression and deployment: magnitude pruning (`pruning`), int8 quantization with qwix
(`quantization`) and export to ONNX and TFLite checked in their runtimes (`export`)."""
