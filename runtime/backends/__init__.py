"""Inference backends behind one interface (base.Backend): ONNX Runtime (onnx_runtime), PyTorch (pytorch), TensorRT
(tensorrt: engine building and running); selection chooses among them for a model and says why."""
