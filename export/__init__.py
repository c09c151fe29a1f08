"""torch -> ONNX export with parity checks and dawsep metadata (training side; needs torch + onnx)."""
