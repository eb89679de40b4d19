"""Export to ONNX and TensorRT; arrives with the export issue."""
